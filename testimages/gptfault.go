package testimages

import (
	"bytes"
	"fmt"
	"os"
	"syscall"

	"github.com/twinslot/twinslot/partition"
)

// FailGPTWrite emulates a change of d's GPT (write: d.PrepareInstall(s), say) whose write
// fails with an I/O error, and returns the *partition.WriteError that package partition
// returns for it, so that callers' tests can check what they do with each outcome.
//
// With applied, the last write of the sequence fails (the primary header, after the backup
// and the primary entry array): write runs, then the old primary header is put back, so the
// primary is damaged (its entry array no longer matches its header) and the disk reads the new
// table from the backup, as GRUB does: errors.Is(err, partition.ErrWriteApplied). Repair, or
// the next change, rewrites the primary. Without applied, the first write (the backup entry
// array) fails: write does not run and the disk is unchanged.
//
// An error of write itself is returned as it is, and so is its nil when it wrote nothing (the
// change was made before): a write that does not happen cannot fail.
func FailGPTWrite(d *partition.Disk, applied bool, write func() error) error {
	we := &partition.WriteError{Step: "write backup entry array", Err: syscall.EIO}
	if applied {
		f, err := os.OpenFile(d.Path(), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("fail GPT write: %w", err)
		}
		defer f.Close()
		ss := int64(d.SectorSize())
		hdr := make([]byte, ss)
		if _, err := f.ReadAt(hdr, ss); err != nil {
			return fmt.Errorf("fail GPT write: read the primary header: %w", err)
		}
		if err := write(); err != nil {
			return err
		}
		now := make([]byte, ss)
		if _, err := f.ReadAt(now, ss); err != nil {
			return fmt.Errorf("fail GPT write: read the primary header: %w", err)
		}
		if bytes.Equal(now, hdr) {
			return nil // the change wrote nothing, so no write could fail
		}
		if _, err := f.WriteAt(hdr, ss); err != nil {
			return fmt.Errorf("fail GPT write: put back the primary header: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fail GPT write: %w", err)
		}
		we.Step, we.Applied = "write primary header", true
	}
	slots, err := d.Slots()
	if err != nil {
		we.Applied, we.ReadErr = false, err
		return we
	}
	if next, _, err := partition.Next(slots); err == nil {
		we.Next = next
	}
	return we
}

// FailingGPT is a disk whose GPT writes of one kind (Op: "BeginInstall", "PrepareInstall",
// "MarkGood", "MarkBad" or "Rollback") fail with an I/O error as FailGPTWrite emulates it: with
// Applied the new table is in effect nonetheless (partition.ErrWriteApplied), else the disk is
// unchanged. RepairErr, when set, makes Repair fail too. The other writes go to Disk.
type FailingGPT struct {
	*partition.Disk
	Op        string
	Applied   bool
	RepairErr error
}

func (f FailingGPT) fail(op string, write func() error) error {
	if op != f.Op {
		return write()
	}
	return FailGPTWrite(f.Disk, f.Applied, write)
}

// BeginInstall is Disk.BeginInstall, failing when Op says so.
func (f FailingGPT) BeginInstall(s partition.Slot) error {
	return f.fail("BeginInstall", func() error { return f.Disk.BeginInstall(s) })
}

// PrepareInstall is Disk.PrepareInstall, failing when Op says so.
func (f FailingGPT) PrepareInstall(s partition.Slot) error {
	return f.fail("PrepareInstall", func() error { return f.Disk.PrepareInstall(s) })
}

// MarkGood is Disk.MarkGood, failing when Op says so.
func (f FailingGPT) MarkGood(s partition.Slot) error {
	return f.fail("MarkGood", func() error { return f.Disk.MarkGood(s) })
}

// MarkBad is Disk.MarkBad, failing when Op says so.
func (f FailingGPT) MarkBad(s partition.Slot) error {
	return f.fail("MarkBad", func() error { return f.Disk.MarkBad(s) })
}

// Rollback is Disk.Rollback, failing when Op says so.
func (f FailingGPT) Rollback(s partition.Slot) (partition.Slot, error) {
	var next partition.Slot
	err := f.fail("Rollback", func() (err error) { next, err = f.Disk.Rollback(s); return err })
	return next, err
}

// Repair is Disk.Repair, or RepairErr when set.
func (f FailingGPT) Repair() (bool, error) {
	if f.RepairErr != nil {
		return false, f.RepairErr
	}
	return f.Disk.Repair()
}
