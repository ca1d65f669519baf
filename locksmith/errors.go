package locksmith

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrFull matches a *FullError: every slot of the group is taken.
	ErrFull = errors.New("all reboot slots are taken")
	// ErrNotHeld: the id holds no slot in the group.
	ErrNotHeld = errors.New("not a holder")
	// ErrNotHolder: a caller tried to release another holder's slot without force.
	ErrNotHolder = errors.New("only the holder may release its slot")
	// ErrLost: the slot a Lock names was released, broken or expired and is no longer this tenure.
	ErrLost = errors.New("reboot slot lost")
)

// FullError says a group has no free slot.
type FullError struct {
	Group   string
	Max     int
	Holders []string
	// Waiting is how many hosts are queued for a slot.
	Waiting int
}

func (e *FullError) Error() string {
	queued := ""
	if e.Waiting > 0 {
		queued = fmt.Sprintf(", %d queued", e.Waiting)
	}
	held := strings.Join(e.Holders, ", ")
	if held == "" {
		held = "nobody"
	}
	return fmt.Sprintf("locksmith: group %q: %v (max %d, held by %s%s); wait, or raise it with locksmithctl set-max",
		e.Group, ErrFull, e.Max, held, queued)
}

// Is makes errors.Is(err, ErrFull) true.
func (e *FullError) Is(target error) bool { return target == ErrFull }
