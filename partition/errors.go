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
)

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
