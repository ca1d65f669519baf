package partition

import (
	"fmt"
	"slices"
	"strings"
)

// Slot is one /usr partition: an entry of type TypeUSR in the GPT.
type Slot struct {
	Number   int        // partition number (1-based table index): 3 for USR-A, 4 for USR-B
	Label    string     // partition name: "USR-A" / "USR-B"
	PartUUID string     // unique partition GUID, lower-case as in mount.usr=PARTUUID=…
	Start    int64      // byte offset of the first byte on the disk
	Size     int64      // bytes
	Attr     Attributes // the full attribute word
}

// String names the slot for messages: `USR-B (#4)`.
func (s Slot) String() string {
	if s.Label == "" {
		return fmt.Sprintf("#%d", s.Number)
	}
	return fmt.Sprintf("%s (#%d)", s.Label, s.Number)
}

// Fits returns a *SlotTooSmallError when an image of n bytes does not fit into s.
func (s Slot) Fits(n int64) error {
	if n > s.Size {
		return &SlotTooSmallError{Slot: s.String(), Need: n, Have: s.Size}
	}
	return nil
}

// The functions below are the slot logic without any I/O: each takes the /usr slots of a
// table and returns a new slice (the input is never modified). Disk methods read the
// table, call one of them and write the result.

// Next is GRUB gptprio.next: among slots, the one with the highest priority > 0 that has
// tries > 0 or is successful; ties go to the lower partition number. Its tries counter is
// decremented when it is > 0 (even when the slot is successful, exactly as GRUB does).
// It returns the chosen slot as updated, and the updated slots. When no slot is eligible
// the error wraps ErrNoBootableSlot (GRUB refuses to boot).
func Next(slots []Slot) (Slot, []Slot, error) {
	best := -1
	for i, s := range slots {
		if !s.Attr.Bootable() {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := slots[best]
		if p, bp := s.Attr.Priority(), b.Attr.Priority(); p > bp || (p == bp && s.Number < b.Number) {
			best = i
		}
	}
	if best < 0 {
		return Slot{}, nil, fmt.Errorf("%w: %s", ErrNoBootableSlot, describe(slots))
	}
	out := slices.Clone(slots)
	if t := out[best].Attr.Tries(); t > 0 {
		out[best].Attr = out[best].Attr.WithTries(t - 1)
	}
	return out[best], out, nil
}

// Prioritize is `cgpt prioritize -i number`: the target moves into a priority group of its
// own above every other; the groups of non-zero priority are then renumbered densely from
// min(number of groups, 15) downwards, coalescing at 1; priority-0 slots stay at 0. With two
// slots the target gets 2 and the other 1 (unless it was 0).
func Prioritize(slots []Slot, number int) ([]Slot, error) {
	if _, err := find(slots, number); err != nil {
		return nil, err
	}
	const top = MaxPriority + 1 // above any real priority: the target's own group
	type group struct {
		prio    int
		members []int
	}
	var groups []group
	for i, s := range slots {
		p := s.Attr.Priority()
		if s.Number == number {
			p = top
		}
		j := slices.IndexFunc(groups, func(g group) bool { return g.prio == p })
		if j < 0 {
			groups = append(groups, group{prio: p})
			j = len(groups) - 1
		}
		groups[j].members = append(groups[j].members, i)
	}
	slices.SortStableFunc(groups, func(a, b group) int { return b.prio - a.prio })
	if groups[len(groups)-1].prio == 0 {
		groups = groups[:len(groups)-1] // never raise or renumber priority-0 slots
	}
	out := slices.Clone(slots)
	p := min(len(groups), MaxPriority)
	for _, g := range groups {
		for _, i := range g.members {
			out[i].Attr = out[i].Attr.WithPriority(p)
		}
		if p > 1 {
			p--
		}
	}
	return out, nil
}

// PlanInstall is what install does to a slot that now holds a new image (flatcar-postinst:
// `cgpt add -S0 -T1; cgpt prioritize`): successful=0, tries=1, top priority.
func PlanInstall(slots []Slot, number int) ([]Slot, error) {
	return setThenPrioritize(slots, number, func(a Attributes) Attributes {
		return a.WithSuccessful(false).WithTries(1)
	})
}

// PlanMarkGood is the commit of a booted slot (flatcar-setgoodroot: `cgpt add -S1 -T0;
// cgpt prioritize`): successful=1, tries=0, and it keeps the top priority.
func PlanMarkGood(slots []Slot, number int) ([]Slot, error) {
	return setThenPrioritize(slots, number, func(a Attributes) Attributes {
		return a.WithSuccessful(true).WithTries(0)
	})
}

// PlanMarkBad sets the slot's priority to 0 so it is never chosen again until an install
// rewrites it. Tries and successful are left as they are.
func PlanMarkBad(slots []Slot, number int) ([]Slot, error) {
	return set(slots, number, func(a Attributes) Attributes { return a.WithPriority(0) })
}

// PlanBeginInstall clears priority, tries and successful: call it before writing into a
// slot so that neither GRUB nor Rollback ever picks a half-written slot.
func PlanBeginInstall(slots []Slot, number int) ([]Slot, error) {
	return set(slots, number, func(a Attributes) Attributes {
		return a.WithPriority(0).WithTries(0).WithSuccessful(false)
	})
}

// PlanRollback makes the partner of the active slot boot next, if it holds an image that
// has booted successfully before and was not marked bad; otherwise the error is a
// *RollbackError saying why. It returns the slot that will boot next and the new slots.
func PlanRollback(slots []Slot, active int) (Slot, []Slot, error) {
	a, err := find(slots, active)
	if err != nil {
		return Slot{}, nil, err
	}
	o, err := Other(slots, a)
	if err != nil {
		return Slot{}, nil, err
	}
	switch {
	case !o.Attr.Successful() && o.Attr.Tries() > 0:
		return Slot{}, nil, &RollbackError{Target: o.String(), Reason: fmt.Sprintf(
			"it holds an update that has not booted yet (%v); there is no older image to go back to — mark it bad instead to cancel the update", o.Attr)}
	case !o.Attr.Successful():
		return Slot{}, nil, &RollbackError{Target: o.String(), Reason: fmt.Sprintf(
			"it has never booted successfully (%v), so it may hold no image or a failed or half-written one", o.Attr)}
	case o.Attr.Priority() == 0:
		return Slot{}, nil, &RollbackError{Target: o.String(), Reason: fmt.Sprintf(
			"it was marked bad (%v); install a new image into it instead", o.Attr)}
	}
	out, err := Prioritize(slots, o.Number)
	if err != nil {
		return Slot{}, nil, err
	}
	next, _, err := Next(out)
	if err != nil || next.Number != o.Number {
		return Slot{}, nil, &RollbackError{Target: o.String(), Reason: fmt.Sprintf("it would still not boot next (%s)", describe(out))}
	}
	o, _ = find(out, o.Number)
	return o, out, nil
}

// Other returns the partner of s among exactly two /usr slots.
func Other(slots []Slot, s Slot) (Slot, error) {
	switch len(slots) {
	case 0:
		return Slot{}, fmt.Errorf("%w: the disk has no partition of type %s", ErrNoSlots, TypeUSR)
	case 1:
		return Slot{}, fmt.Errorf("%w: %v has no partner to switch to; the disk needs USR-A and USR-B", ErrOneSlot, slots[0])
	case 2:
	default:
		return Slot{}, fmt.Errorf("%w: %d /usr slots (%s); the A/B partner of %v is ambiguous", ErrUnsupportedTable, len(slots), describe(slots), s)
	}
	switch s.Number {
	case slots[0].Number:
		return slots[1], nil
	case slots[1].Number:
		return slots[0], nil
	}
	return Slot{}, fmt.Errorf("%w: partition %d is not a /usr slot (slots: %s)", ErrUnknownSlot, s.Number, describe(slots))
}

func set(slots []Slot, number int, f func(Attributes) Attributes) ([]Slot, error) {
	if _, err := find(slots, number); err != nil {
		return nil, err
	}
	out := slices.Clone(slots)
	for i := range out {
		if out[i].Number == number {
			out[i].Attr = f(out[i].Attr)
		}
	}
	return out, nil
}

func setThenPrioritize(slots []Slot, number int, f func(Attributes) Attributes) ([]Slot, error) {
	out, err := set(slots, number, f)
	if err != nil {
		return nil, err
	}
	return Prioritize(out, number)
}

func find(slots []Slot, number int) (Slot, error) {
	for _, s := range slots {
		if s.Number == number {
			return s, nil
		}
	}
	if len(slots) == 0 {
		return Slot{}, fmt.Errorf("%w: the disk has no partition of type %s", ErrNoSlots, TypeUSR)
	}
	return Slot{}, fmt.Errorf("%w: partition %d is not a /usr slot (slots: %s)", ErrUnknownSlot, number, describe(slots))
}

// describe lists slots for messages: "USR-A (#3) P=1 T=0 S=1, USR-B (#4) P=0 T=0 S=0".
func describe(slots []Slot) string {
	parts := make([]string, len(slots))
	for i, s := range slots {
		parts[i] = fmt.Sprintf("%v %v", s, s.Attr)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
