package partition

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns for these conditions satisfies errors.Is
// with one of them; the message says what was found and what to do.
var (
	// ErrNotGPT: neither LBA 1 nor the last LBA carries a GPT header signature.
	ErrNotGPT = errors.New("not a GPT disk")
	// ErrNoSlots: the table has no partition of type TypeUSR.
	ErrNoSlots = errors.New("no /usr slots")
	// ErrOneSlot: the table has a single /usr slot, so there is nothing to switch to.
	ErrOneSlot = errors.New("only one /usr slot")
	// ErrSlotTooSmall: an image does not fit into a slot (see SlotTooSmallError).
	ErrSlotTooSmall = errors.New("slot too small")
	// ErrBothTablesCorrupt: the primary and the backup GPT are both invalid.
	ErrBothTablesCorrupt = errors.New("both GPT copies are corrupt")
	// ErrBusy: another process holds the disk open for writing.
	ErrBusy = errors.New("disk busy")
	// ErrNoBootableSlot: no slot has priority > 0 and (tries > 0 or successful), or an operation
	// was refused because it would leave the disk in that state.
	ErrNoBootableSlot = errors.New("no bootable slot")
	// ErrRollbackRefused: Rollback found no usable slot to go back to (see RollbackError).
	ErrRollbackRefused = errors.New("rollback refused")
	// ErrUnknownSlot: no /usr slot matches the label, number or PARTUUID asked for.
	ErrUnknownSlot = errors.New("unknown slot")
	// ErrReadOnly: a write was attempted through a Disk opened with ReadOnly.
	ErrReadOnly = errors.New("disk opened read-only")
	// ErrOutOfSlot: a SlotWriter write reaches past the end of its slot.
	ErrOutOfSlot = errors.New("write past the end of the slot")
	// ErrUnsupportedTable: a valid GPT whose layout this package will not rewrite. The table
	// may be read, but every write is refused and leaves the disk unchanged.
	ErrUnsupportedTable = errors.New("unsupported GPT layout")
	// ErrWriteApplied: a table write failed part-way, but the disk already reads the new
	// table, so the change is in effect (see WriteError).
	ErrWriteApplied = errors.New("GPT change in effect despite a failed write")
)

// WriteError says a write or sync of the GPT failed part-way (an I/O error, not a crash)
// and what the disk reads after it, read back at once. Writes go backup then primary (or
// primary first when it was the damaged copy), so the disk reads either the old or the new
// table; Applied says which.
type WriteError struct {
	Step string // the write or sync that failed, e.g. "write primary header"
	Err  error  // its error
	// Applied: the disk reads the new table; GRUB boots by it. The other copy is stale or
	// damaged until Repair or the next write repairs it. errors.Is(err, ErrWriteApplied).
	Applied bool
	Next    Slot  // the slot the disk boots next as it reads now (Number 0: none, or unknown)
	ReadErr error // non-nil when the table could not be read back: Applied is unknown
}

func (e *WriteError) Error() string {
	switch {
	case e.ReadErr != nil:
		return fmt.Sprintf("%s: %v; reading the table back failed too (%v), so it is unknown whether the change took effect: "+
			"the next boot may use the old or the new table. Check the disk, then repair the GPT ('updatectl slots --repair') and retry",
			e.Step, e.Err, e.ReadErr)
	case e.Applied:
		return fmt.Sprintf("%s: %v; the change took effect nonetheless: the disk reads the new table and boots %s next. "+
			"One GPT copy is stale or damaged: repair the GPT ('updatectl slots --repair'; the next change also does) and check the disk",
			e.Step, e.Err, e.next())
	}
	return fmt.Sprintf("%s: %v; the change did not take effect: the disk boots %s next. Check the disk, then retry",
		e.Step, e.Err, e.next())
}

func (e *WriteError) next() string {
	if e.Next.Number == 0 {
		return "no slot"
	}
	return e.Next.String()
}

// Unwrap returns the error of the failed write or sync.
func (e *WriteError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrWriteApplied) true when the change is in effect.
func (e *WriteError) Is(target error) bool { return target == ErrWriteApplied && e.Applied }

// SlotTooSmallError says an image of Need bytes does not fit into a slot of Have bytes.
type SlotTooSmallError struct {
	Slot       string
	Need, Have int64
}

func (e *SlotTooSmallError) Error() string {
	return fmt.Sprintf("slot %s is %d bytes but the image needs %d bytes; use an image built for this disk layout (mkimage usr -size %d) or a disk with larger slots",
		e.Slot, e.Have, e.Need, e.Have)
}

// Is makes errors.Is(err, ErrSlotTooSmall) true.
func (e *SlotTooSmallError) Is(target error) bool { return target == ErrSlotTooSmall }

// RollbackError says why Rollback refused to switch to Target.
type RollbackError struct {
	Target string // label of the slot that would have booted next
	Reason string
}

func (e *RollbackError) Error() string {
	return fmt.Sprintf("rollback to %s refused: %s", e.Target, e.Reason)
}

// Is makes errors.Is(err, ErrRollbackRefused) true.
func (e *RollbackError) Is(target error) bool { return target == ErrRollbackRefused }

// ErrBadEntry: a /usr partition entry lies outside the usable area or overlaps another.
var ErrBadEntry = errors.New("invalid partition entry")
