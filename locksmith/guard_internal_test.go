package locksmith

import (
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

// With a holder above a lowered max, the slot index no longer bounds the count: a transaction
// decided on a read that missed a newer slot must fail, or the group would exceed max.
func TestGuardAllRejectsStaleRead(t *testing.T) {
	e := etcdtest.New(t)
	s := NewStore(e.Client, "", nil)
	ctx := t.Context()
	s.SetMax(ctx, "g", 4)
	for _, id := range []string{"a", "b", "c", "x"} {
		if _, err := s.TryLock(ctx, "g", Holder{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	s.Unlock(ctx, "g", "b", "b", false)
	s.Unlock(ctx, "g", "c", "c", false)
	s.SetMax(ctx, "g", 3) // a at slot 0, x at slot 3 (above max): 2 holders of 3
	st, err := s.State(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	// Another writer creates slot 2 after the read: the group is now at max.
	other := Holder{Version: FormatVersion, ID: "other", AcquiredAt: time.Now()}
	if _, err := e.Client.Put(ctx, s.slotKey("g", 2), mustJSON(other)); err != nil {
		t.Fatal(err)
	}
	var ls leases
	lk, ok, err := s.attempt(ctx, st, Holder{Version: FormatVersion, ID: "late"}, &ls)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Fatalf("stale decision committed slot %d: 4 holders under max 3", lk.Slot.Index)
	}
	now, _ := s.State(ctx, "g")
	if len(now.Slots) != 3 {
		t.Fatalf("%d holders, want 3", len(now.Slots))
	}
}
