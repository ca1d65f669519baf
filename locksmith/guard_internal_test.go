package locksmith

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// Two acquisitions for one id (locksmithctl lock, a FleetLock retry, two FleetLock servers),
// decided on reads taken before and after another holder left, pick different free slots. The
// holder key lets only one commit: otherwise the id would hold two slots and its release free
// only one, leaving the other held (under stale policy "hold": for good).
func TestOneIDOneSlotAcrossStaleReads(t *testing.T) {
	e := etcdtest.New(t)
	s := NewStore(e.Client, "", nil)
	ctx := t.Context()
	s.SetMax(ctx, "g", 3)
	y, err := s.TryLock(ctx, "g", Holder{ID: "y"}) // slot 0
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.State(ctx, "g") // sees y at 0: x would take slot 1
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, y); err != nil {
		t.Fatal(err)
	}
	after, err := s.State(ctx, "g") // sees nobody: x would take slot 0
	if err != nil {
		t.Fatal(err)
	}
	x := Holder{Version: FormatVersion, ID: "x"}
	var la, lb leases
	first, ok, err := s.attempt(ctx, before, x, &la)
	if err != nil || !ok {
		t.Fatalf("first acquisition: ok %v, %v", ok, err)
	}
	if lk, ok, err := s.attempt(ctx, after, x, &lb); err != nil || ok {
		t.Fatalf("second acquisition for x on an older read committed slot %d (%v): x holds two slots", lk.Slot.Index, err)
	}
	// Decided again on a fresh read, the second request re-locks x's slot.
	again, err := s.TryLock(ctx, "g", x)
	if err != nil || again.Slot.Index != first.Slot.Index || again.Token() != first.Token() {
		t.Fatalf("retry: %+v %v, want a re-lock of slot %d", again.Slot, err, first.Slot.Index)
	}
	if err := s.Release(ctx, again); err != nil {
		t.Fatal(err)
	}
	if resp, err := e.Client.Get(ctx, s.GroupKeyPrefix("g"), clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("left after x released: %v %v, want only the config", resp.Kvs, err)
	}
}
