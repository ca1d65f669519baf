package locksmith

import (
	"errors"
	"testing"
	"time"
)

func state(max int, holders ...any) State {
	s := State{Group: "g", Config: GroupConfig{Version: FormatVersion, Max: max, Stale: StaleHold}}
	for i := 0; i < len(holders); i += 2 {
		s.Slots = append(s.Slots, Slot{Index: holders[i].(int), Holder: Holder{Version: 1, ID: holders[i+1].(string)}, ModRevision: int64(10 + i)})
	}
	return s
}

func queued(s State, ids ...string) State {
	for i, id := range ids {
		s.Queue = append(s.Queue, Waiter{ID: id, CreateRevision: int64(100 + i)})
	}
	return s
}

func keyed(s State, id string, rev int64) State {
	s.HolderKeys = map[string]int64{id: rev}
	return s
}

func TestPlanAcquire(t *testing.T) {
	for _, tc := range []struct {
		name     string
		s        State
		id       string
		wantFull bool
		want     AcquirePlan
	}{
		{name: "full", s: state(1, 0, "a"), id: "b", wantFull: true},
		{name: "full at max 2", s: state(2, 0, "a", 1, "b"), id: "c", wantFull: true},
		{name: "max 0 admits nobody", s: state(0), id: "a", wantFull: true},
		{name: "lowered max keeps holders out", s: state(1, 1, "a", 2, "b"), id: "c", wantFull: true},
		{name: "lowered max, at max exactly", s: state(2, 2, "a", 3, "b"), id: "c", wantFull: true},
		{name: "empty takes slot 0", s: state(3), id: "a", want: AcquirePlan{Index: 0}},
		{name: "lowest free index", s: state(3, 0, "a", 2, "b"), id: "c", want: AcquirePlan{Index: 1}},
		{name: "overflow holder guards all", s: state(2, 3, "a"), id: "c", want: AcquirePlan{Index: 0, GuardAll: true}},
		{name: "unreadable slot guards all", s: state(3, -1, "corrupt:x"), id: "c", want: AcquirePlan{Index: 0, GuardAll: true}},
		{name: "free slot owed to a queued waiter", s: queued(state(2, 0, "a"), "w1"), id: "x", wantFull: true},
		{name: "second in the queue waits", s: queued(state(2, 0, "a"), "w1", "w2"), id: "w2", wantFull: true},
		{name: "first in the queue takes it", s: queued(state(2, 0, "a"), "w1", "w2"), id: "w1", want: AcquirePlan{Index: 1}},
		{name: "enough slots for those ahead", s: queued(state(3, 0, "a"), "w1", "w2"), id: "w2", want: AcquirePlan{Index: 1}},
		{name: "relock when full", s: state(1, 0, "a"), id: "a", want: AcquirePlan{Index: 0, Relock: true}},
		{name: "relock ahead of the queue", s: queued(state(1, 0, "a"), "w1"), id: "a", want: AcquirePlan{Index: 0, Relock: true}},
		{name: "relock above lowered max", s: state(1, 0, "b", 4, "a"), id: "a", want: AcquirePlan{Index: 4, Relock: true}},
		{name: "relock guards its holder key", s: keyed(state(2, 1, "a"), "a", 11), id: "a", want: AcquirePlan{Index: 1, Relock: true, HolderKeyRevision: 11}},
		{name: "orphan holder key is guarded, not blocking", s: keyed(state(2, 0, "b"), "a", 7), id: "a", want: AcquirePlan{Index: 1, HolderKeyRevision: 7}},
		{name: "another id's holder key is not ours", s: keyed(state(2), "b", 7), id: "a", want: AcquirePlan{Index: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanAcquire(tc.s, tc.id)
			if tc.wantFull {
				var fe *FullError
				if !errors.Is(err, ErrFull) || !errors.As(err, &fe) || fe.Max != tc.s.Config.Max || len(fe.Holders) != len(tc.s.Slots) || fe.Waiting != len(tc.s.Queue) {
					t.Fatalf("err = %v, want a FullError naming %d holders", err, len(tc.s.Slots))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Existing = Slot{}
			if got != tc.want {
				t.Fatalf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPlanRelease(t *testing.T) {
	for _, tc := range []struct {
		name              string
		requester, target string
		force             bool
		wantErr           error
		wantIndex         int
	}{
		{name: "other without force", requester: "b", target: "a", wantErr: ErrNotHolder},
		{name: "not held", requester: "c", target: "c", wantErr: ErrNotHeld},
		{name: "forced not held", requester: "op", target: "c", force: true, wantErr: ErrNotHeld},
		{name: "own", requester: "a", target: "a", wantIndex: 0},
		{name: "forced other", requester: "op", target: "b", force: true, wantIndex: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sl, err := PlanRelease(state(3, 0, "a", 2, "b"), tc.requester, tc.target, tc.force)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || sl.Index != tc.wantIndex {
				t.Fatalf("slot %d, err %v; want slot %d", sl.Index, err, tc.wantIndex)
			}
		})
	}
}

func TestPlanConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       GroupConfig
		wantErr bool
	}{
		{name: "negative max", c: GroupConfig{Max: -1}, wantErr: true},
		{name: "max too big", c: GroupConfig{Max: MaxSlots + 1}, wantErr: true},
		{name: "expire without ttl", c: GroupConfig{Max: 1, Stale: StaleExpire}, wantErr: true},
		{name: "unknown policy", c: GroupConfig{Max: 1, Stale: "drop"}, wantErr: true},
		{name: "negative ttl", c: GroupConfig{Max: 1, LeaseTTLSeconds: -5}, wantErr: true},
		{name: "lower below holders", c: GroupConfig{Max: 1}},
		{name: "expire with ttl", c: GroupConfig{Max: 3, LeaseTTLSeconds: 600, Stale: StaleExpire}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanConfig(state(3, 0, "a", 1, "b"), tc.c)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && (got.Version != FormatVersion || got.Stale == "") {
				t.Fatalf("config not completed: %+v", got)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty id", ValidateID("")},
		{"id with space", ValidateID("a b")},
		{"id too long", ValidateID(string(make([]byte, MaxIDLen+1)))},
		{"empty group", ValidateGroup("")},
		{"group with newline", ValidateGroup("a\nb")},
		{"holder of newer format", Holder{Version: 2, ID: "a"}.Validate()},
		{"holder field too long", Holder{Version: 1, ID: "a", Note: string(make([]byte, MaxFieldLen+1))}.Validate()},
		{"config of newer format", GroupConfig{Version: 2, Max: 1}.Validate()},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := ValidateGroup("prod/db"); err != nil {
		t.Errorf("group with slash rejected: %v", err)
	}
}

func TestStale(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s := state(2, 0, "a", 1, "b")
	s.Slots[0].Holder.AcquiredAt = now.Add(-2 * time.Hour)
	s.Slots[1].Holder.AcquiredAt = now.Add(-10 * time.Minute)
	if s.Stale(s.Slots[0], now) {
		t.Error("stale without a TTL")
	}
	s.Config.LeaseTTLSeconds = 3600
	if !s.Stale(s.Slots[0], now) || s.Stale(s.Slots[1], now) {
		t.Error("TTL 1h: want only the 2h-old holder stale")
	}
	if s.Available() != 0 || state(1, 3, "x", 4, "y").Available() != 0 || state(4, 0, "x").Available() != 3 {
		t.Error("Available wrong")
	}
}
