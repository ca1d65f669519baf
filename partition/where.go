package partition

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrNoActiveSlot: a disk that is not running has no committed slot (successful, priority
// above 0), so no slot can be called active.
var ErrNoActiveSlot = errors.New("no slot of the disk is marked successful with a priority above 0; cannot tell the active slot")

// CmdlinePath is the file beside a disk image that holds the kernel command line of the
// image's last emulated boot (testimages' Boot and `mkimage boot` write it).
func CmdlinePath(disk string) string { return disk + ".cmdline" }

// Where is the disk a host tool works on and, when known, the booted /usr on it.
type Where struct {
	Disk string
	// Booted is the running /usr as the host (or the image's CmdlinePath) says; nil when the
	// disk is not the running system's and no boot of it is recorded. Booted.Disk is empty
	// when the host could not place it on a device (a --root tree, a container): it then counts
	// only if it names a slot of Disk.
	Booted *Booted
}

// FindDisk is the one rule for "which disk, and which of its slots runs" that updated,
// updatectl and payload apply share:
//
//   - disk == "": the disk holding the running /usr (FindBooted, then Locate on host); an error
//     tells the operator to pass --disk when it cannot be found.
//   - disk != "": the boot recorded beside an image (CmdlinePath(disk)); else the host's booted
//     /usr when Locate puts it on this very disk, or when the host cannot place it at all (its
//     identity then has to name a slot of the disk, see Where.Active); else none.
//
// Test images carry Flatcar's PARTUUIDs, which a real host's disk has too, so a host /usr
// located on another disk never counts for an image.
func FindDisk(host fs.FS, disk string) (Where, error) {
	if disk == "" {
		if host == nil {
			return Where{}, errors.New("find booted /usr: no host filesystem to look in; pass --disk")
		}
		b, err := FindBooted(host)
		if err != nil {
			return Where{}, err
		}
		if b, err = Locate(host, b); err != nil {
			return Where{}, fmt.Errorf("%w; pass --disk", err)
		}
		return Where{Disk: b.Disk, Booted: &b}, nil
	}
	if c, err := os.ReadFile(CmdlinePath(disk)); err == nil && len(c) <= maxCmdline {
		if b, ok := ParseCmdline(string(c)); ok {
			b.From = CmdlinePath(disk)
			return Where{Disk: disk, Booted: &b}, nil
		}
	}
	if host != nil {
		if b, err := FindBooted(host); err == nil {
			l, err := Locate(host, b)
			switch {
			case err != nil:
				return Where{Disk: disk, Booted: &b}, nil // unplaced: must name a slot of disk
			case l.Disk == disk || sameFile(l.Disk, disk):
				return Where{Disk: disk, Booted: &l}, nil
			}
		}
	}
	return Where{Disk: disk}, nil
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// Active returns the active slot of d (opened from w.Disk) and whether it is the booted one
// (ActiveOf).
func (w Where) Active(d *Disk) (s Slot, booted bool, err error) {
	slots, err := d.Slots()
	if err != nil {
		return Slot{}, false, err
	}
	return ActiveOf(slots, d.path, w.Booted)
}

// ActiveOf is the active slot of the disk at path whose slots are slots, given what is known
// about the booted /usr (b, nil when nothing is):
//
//   - b names a slot (PARTUUID, else label, else partition number when b is placed on path):
//     that slot, booted=true;
//   - b is placed on a disk (b.Disk set) and names no slot of it: ErrUnknownSlot (the running
//     /usr is not one of the slots: refuse rather than guess);
//   - otherwise the disk is not running: the committed slot (Committed), booted=false.
//
// Callers that must act on the running slot (updated, updatectl mark-good/rollback) require
// booted; payload apply installs beside the committed slot of an image.
func ActiveOf(slots []Slot, path string, b *Booted) (s Slot, booted bool, err error) {
	if b != nil {
		if b.PartUUID == "" && b.PartLabel == "" && b.Disk != "" && b.Disk != path {
			return Slot{}, false, fmt.Errorf("%w: the booted /usr is on %s, not on %s", ErrUnknownSlot, b.Disk, path)
		}
		s, err := ActiveSlot(slots, *b)
		if err == nil {
			return s, true, nil
		}
		if b.Disk != "" {
			return Slot{}, false, err
		}
	}
	s, err = Committed(slots)
	return s, false, err
}

// Committed is the slot a disk that is not running keeps booting once trials are over: among
// the successful slots with priority above 0, the highest priority, ties to the lower
// partition number (as Next breaks them). ErrNoActiveSlot when there is none.
func Committed(slots []Slot) (Slot, error) {
	best := -1
	for i, s := range slots {
		if !s.Attr.Successful() || s.Attr.Priority() == 0 {
			continue
		}
		if best < 0 || s.Attr.Priority() > slots[best].Attr.Priority() ||
			s.Attr.Priority() == slots[best].Attr.Priority() && s.Number < slots[best].Number {
			best = i
		}
	}
	if best < 0 {
		return Slot{}, fmt.Errorf("%w (slots: %s)", ErrNoActiveSlot, describe(slots))
	}
	return slots[best], nil
}
