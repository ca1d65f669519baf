package partition

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// attr builds attributes from P, T, S.
func attr(p, n int, ok bool) Attributes {
	return Attributes(0).WithPriority(p).WithTries(n).WithSuccessful(ok)
}

// ab returns USR-A (#3) and USR-B (#4) with the given attributes.
func ab(a, b Attributes) []Slot {
	return []Slot{
		{Number: 3, Label: "USR-A", PartUUID: "7130c94a-213a-4e5a-8e26-6cce9662f132", Attr: a},
		{Number: 4, Label: "USR-B", PartUUID: "e03dd35c-7c2d-4a47-b3fe-27f15780a57c", Attr: b},
	}
}

func prios(slots []Slot) string {
	var s []string
	for _, x := range slots {
		s = append(s, fmt.Sprintf("%d:%v", x.Number, x.Attr))
	}
	return strings.Join(s, " ")
}

func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name      string
		slots     []Slot
		wantErr   error
		want      int        // chosen partition number
		wantAttrs Attributes // chosen slot after the decrement
	}{
		{name: "no slots", slots: nil, wantErr: ErrNoBootableSlot},
		{name: "all failed: tries used up, not successful", slots: ab(attr(1, 0, false), attr(2, 0, false)), wantErr: ErrNoBootableSlot},
		{name: "priority 0 never, even successful with tries", slots: ab(attr(0, 15, true), attr(0, 1, false)), wantErr: ErrNoBootableSlot},
		{name: "fresh image boots A", slots: ab(attr(1, 0, true), attr(0, 0, false)), want: 3, wantAttrs: attr(1, 0, true)},
		{name: "installed B tried first, tries decrement 1->0", slots: ab(attr(1, 0, true), attr(2, 1, false)), want: 4, wantAttrs: attr(2, 0, false)},
		{name: "B tried out falls back to A", slots: ab(attr(1, 0, true), attr(2, 0, false)), want: 3, wantAttrs: attr(1, 0, true)},
		{name: "tie goes to lower number", slots: ab(attr(2, 0, true), attr(2, 0, true)), want: 3, wantAttrs: attr(2, 0, true)},
		{name: "tie goes to lower number in any slice order", slots: []Slot{ab(0, attr(5, 0, true))[1], ab(attr(5, 3, false), 0)[0]}, want: 3, wantAttrs: attr(5, 2, false)},
		{name: "successful with tries still decrements", slots: ab(attr(1, 0, true), attr(2, 3, true)), want: 4, wantAttrs: attr(2, 2, true)},
		{name: "higher priority wins over lower index", slots: ab(attr(1, 5, false), attr(9, 1, false)), want: 4, wantAttrs: attr(9, 0, false)},
		{name: "other bits kept on decrement", slots: ab(attr(1, 0, true), attr(2, 1, false)|1<<60|1), want: 4, wantAttrs: attr(2, 0, false) | 1<<60 | 1},
		{name: "three slots", slots: append(ab(attr(1, 0, true), attr(2, 0, false)), Slot{Number: 5, Label: "USR-C", Attr: attr(3, 2, false)}), want: 5, wantAttrs: attr(3, 1, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := prios(tc.slots)
			got, out, err := Next(tc.slots)
			if prios(tc.slots) != in {
				t.Fatalf("Next modified its input")
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Number != tc.want || got.Attr != tc.wantAttrs {
				t.Fatalf("chose %d %v, want %d %v", got.Number, got.Attr, tc.want, tc.wantAttrs)
			}
			for i, s := range out {
				want := tc.slots[i].Attr
				if s.Number == tc.want {
					want = tc.wantAttrs
				}
				if s.Attr != want {
					t.Errorf("slot %d: %v, want %v", s.Number, s.Attr, want)
				}
			}
		})
	}
}

// TestNextCountsAttempts: an installed slot gets exactly one attempt, then the old one boots.
func TestNextCountsAttempts(t *testing.T) {
	slots, err := PlanInstall(ab(attr(1, 0, true), 0), 4)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for range 3 {
		var s Slot
		s, slots, err = Next(slots)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Number)
	}
	if fmt.Sprint(got) != "[4 3 3]" {
		t.Fatalf("boots %v, want [4 3 3]", got)
	}
}

func TestPrioritize(t *testing.T) {
	five := func(p ...int) []Slot {
		var s []Slot
		for i, x := range p {
			s = append(s, Slot{Number: i + 1, Attr: attr(x, 0, true) | 1<<60})
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		slots   []Slot
		target  int
		want    []int
		wantErr error
	}{
		{name: "unknown target", slots: ab(attr(1, 0, true), 0), target: 7, wantErr: ErrUnknownSlot},
		{name: "no slots", slots: nil, target: 3, wantErr: ErrNoSlots},
		{name: "two slots: new 2, old 1", slots: ab(attr(1, 0, true), 0), target: 4, want: []int{1, 2}},
		{name: "two slots from zero target", slots: ab(attr(2, 0, true), attr(0, 0, false)), target: 4, want: []int{1, 2}},
		{name: "already top stays 2/1", slots: ab(attr(1, 0, true), attr(2, 0, true)), target: 4, want: []int{1, 2}},
		{name: "back to A", slots: ab(attr(1, 0, true), attr(2, 0, true)), target: 3, want: []int{2, 1}},
		{name: "other at 0 stays 0", slots: ab(0, attr(0, 0, false)), target: 3, want: []int{1, 0}},
		{name: "equal priorities split", slots: ab(attr(5, 0, true), attr(5, 0, true)), target: 4, want: []int{1, 2}},
		{name: "high priorities compacted", slots: ab(attr(15, 0, true), attr(9, 0, true)), target: 4, want: []int{1, 2}},
		{name: "five slots, order kept", slots: five(3, 7, 0, 7, 1), target: 5, want: []int{1, 2, 0, 2, 3}},
		{name: "five slots, friends stay together", slots: five(4, 4, 4, 0, 0), target: 1, want: []int{2, 1, 1, 0, 0}},
		{name: "five groups renumbered densely", slots: five(1, 2, 3, 4, 5), target: 3, want: []int{1, 2, 5, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Prioritize(tc.slots, tc.target)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []int
			for i, s := range out {
				got = append(got, s.Attr.Priority())
				if s.Attr&^(0xF<<PriorityShift) != tc.slots[i].Attr&^(0xF<<PriorityShift) {
					t.Errorf("slot %d: bits other than priority changed: %v -> %v", s.Number, tc.slots[i].Attr, s.Attr)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("priorities %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPrioritizeManyGroups: more groups than priorities coalesce the lowest at 1, and the
// target still gets 15.
func TestPrioritizeManyGroups(t *testing.T) {
	var slots []Slot
	for i := range 20 {
		slots = append(slots, Slot{Number: i + 1, Attr: attr(i%15+1, 0, true)})
	}
	out, err := Prioritize(slots, 20)
	if err != nil {
		t.Fatal(err)
	}
	if p := out[19].Attr.Priority(); p != 15 {
		t.Fatalf("target priority %d, want 15", p)
	}
	for i, s := range out[:19] {
		if p := s.Attr.Priority(); p < 1 || p >= 15 {
			t.Errorf("slot %d (was %d) got priority %d", i+1, slots[i].Attr.Priority(), p)
		}
	}
	// Order is kept: a higher old priority never ends below a lower one.
	for i := range out[:19] {
		for j := range out[:19] {
			if slots[i].Attr.Priority() > slots[j].Attr.Priority() && out[i].Attr.Priority() < out[j].Attr.Priority() {
				t.Errorf("order inverted between %d and %d", i+1, j+1)
			}
		}
	}
}

func TestPlans(t *testing.T) {
	fresh := ab(attr(1, 0, true), attr(0, 0, false))
	installed := ab(attr(1, 0, true), attr(2, 1, false))
	tried := ab(attr(1, 0, true), attr(2, 0, false))
	good := ab(attr(1, 0, true), attr(2, 0, true))
	for _, tc := range []struct {
		name    string
		plan    func([]Slot, int) ([]Slot, error)
		slots   []Slot
		target  int
		want    []Slot
		wantErr error
	}{
		{name: "install unknown", plan: PlanInstall, slots: fresh, target: 9, wantErr: ErrUnknownSlot},
		{name: "install into B", plan: PlanInstall, slots: fresh, target: 4, want: installed},
		{name: "install into B again", plan: PlanInstall, slots: tried, target: 4, want: installed},
		{name: "install into A from good B", plan: PlanInstall, slots: good, target: 3, want: ab(attr(2, 1, false), attr(1, 0, true))},
		{name: "mark good B", plan: PlanMarkGood, slots: tried, target: 4, want: good},
		{name: "mark good twice is a no-op", plan: PlanMarkGood, slots: good, target: 4, want: good},
		{name: "mark bad B", plan: PlanMarkBad, slots: tried, target: 4, want: ab(attr(1, 0, true), attr(0, 0, false))},
		{name: "begin install B", plan: PlanBeginInstall, slots: good, target: 4, want: ab(attr(1, 0, true), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.plan(tc.slots, tc.target)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if prios(out) != prios(tc.want) {
				t.Fatalf("got  %s\nwant %s", prios(out), prios(tc.want))
			}
		})
	}
}

func TestPlanRollback(t *testing.T) {
	for _, tc := range []struct {
		name       string
		slots      []Slot
		active     int
		wantErr    error
		wantReason string
		want       []Slot
	}{
		{name: "unknown active", slots: ab(attr(1, 0, true), 0), active: 1, wantErr: ErrUnknownSlot},
		{name: "one slot", slots: ab(attr(1, 0, true), 0)[:1], active: 3, wantErr: ErrOneSlot},
		{name: "fresh image: B never booted", slots: ab(attr(1, 0, true), 0), active: 3, wantErr: ErrRollbackRefused, wantReason: "never booted successfully"},
		{name: "pending update is not older", slots: ab(attr(1, 0, true), attr(2, 1, false)), active: 3, wantErr: ErrRollbackRefused, wantReason: "has not booted yet"},
		{name: "marked bad", slots: ab(attr(0, 0, true), attr(2, 0, true)), active: 4, wantErr: ErrRollbackRefused, wantReason: "marked bad"},
		{name: "good B back to A", slots: ab(attr(1, 0, true), attr(2, 0, true)), active: 4, want: ab(attr(2, 0, true), attr(1, 0, true))},
		{name: "B on trial back to A", slots: ab(attr(1, 0, true), attr(2, 0, false)), active: 4, want: ab(attr(2, 0, true), attr(1, 0, false))},
		{name: "A back to B", slots: ab(attr(2, 0, true), attr(1, 0, true)), active: 3, want: ab(attr(1, 0, true), attr(2, 0, true))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, out, err := PlanRollback(tc.slots, tc.active)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.wantReason) {
					t.Fatalf("err = %v, want %v with %q", err, tc.wantErr, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if prios(out) != prios(tc.want) {
				t.Fatalf("got  %s\nwant %s", prios(out), prios(tc.want))
			}
			next, _, err := Next(out)
			if err != nil || next.Number != target.Number || target.Number == tc.active {
				t.Fatalf("target %v, next %v (%v), active %d", target, next, err, tc.active)
			}
		})
	}
}

func TestOther(t *testing.T) {
	s := ab(0, 0)
	three := append(ab(0, 0), Slot{Number: 5})
	for _, tc := range []struct {
		name    string
		slots   []Slot
		of      Slot
		want    int
		wantErr error
	}{
		{"none", nil, s[0], 0, ErrNoSlots},
		{"one", s[:1], s[0], 0, ErrOneSlot},
		{"three", three, s[0], 0, ErrUnsupportedTable},
		{"not a slot", s, Slot{Number: 9}, 0, ErrUnknownSlot},
		{"A", s, s[0], 4, nil},
		{"B", s, s[1], 3, nil},
	} {
		got, err := Other(tc.slots, tc.of)
		if !errors.Is(err, tc.wantErr) || got.Number != tc.want {
			t.Errorf("%s: got %d, %v; want %d, %v", tc.name, got.Number, err, tc.want, tc.wantErr)
		}
	}
}

func TestSlotFits(t *testing.T) {
	s := Slot{Number: 4, Label: "USR-B", Size: 1 << 20}
	if err := s.Fits(1 << 20); err != nil {
		t.Fatal(err)
	}
	err := s.Fits(1<<20 + 1)
	var tooSmall *SlotTooSmallError
	if !errors.Is(err, ErrSlotTooSmall) || !errors.As(err, &tooSmall) || tooSmall.Need != 1<<20+1 || tooSmall.Have != 1<<20 {
		t.Fatalf("err = %v", err)
	}
}
