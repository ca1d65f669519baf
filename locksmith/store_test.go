package locksmith_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

func holder(id string) locksmith.Holder {
	return locksmith.Holder{ID: id, BootID: "boot-1", FromVersion: "1.0.0", ToVersion: "1.1.0"}
}

func newStore(t *testing.T) (*locksmith.Store, *etcdtest.Etcd) {
	e := etcdtest.New(t)
	return locksmith.NewStore(e.Client, "", nil), e
}

func TestLockRelockUnlock(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	if _, err := s.SetMax(ctx, "g", 2); err != nil {
		t.Fatal(err)
	}
	a, err := s.TryLock(ctx, "g", holder("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(ctx, "g", holder("b")); err != nil {
		t.Fatal(err)
	}
	_, err = s.TryLock(ctx, "g", holder("c"))
	var fe *locksmith.FullError
	if !errors.As(err, &fe) || fe.Max != 2 || len(fe.Holders) != 2 {
		t.Fatalf("third lock: %v, want FullError max 2 holders 2", err)
	}

	// The holder re-locks after a reboot: same slot, same tenure, new boot id, original time.
	h := holder("a")
	h.BootID = "boot-2"
	a2, err := s.TryLock(ctx, "g", h)
	if err != nil {
		t.Fatalf("relock by the holder while full: %v", err)
	}
	if a2.Slot.Index != a.Slot.Index || a2.Token() != a.Token() || a2.Slot.Holder.BootID != "boot-2" ||
		!a2.Slot.Holder.AcquiredAt.Equal(a.Slot.Holder.AcquiredAt) {
		t.Fatalf("relock = %+v, want slot %d token %d boot-2 acquired %v", a2.Slot, a.Slot.Index, a.Token(), a.Slot.Holder.AcquiredAt)
	}

	// Only the holder releases, unless forced.
	if _, err := s.Unlock(ctx, "g", "c", "b", false); !errors.Is(err, locksmith.ErrNotHolder) {
		t.Fatalf("unlock of b by c: %v, want ErrNotHolder", err)
	}
	if _, err := s.Unlock(ctx, "g", "c", "c", false); !errors.Is(err, locksmith.ErrNotHeld) {
		t.Fatalf("unlock of c: %v, want ErrNotHeld", err)
	}
	if got, err := s.Unlock(ctx, "g", "operator", "b", true); err != nil || got.ID != "b" {
		t.Fatalf("forced unlock of b: %v %+v", err, got)
	}

	// Fencing: once a's slot is broken and taken again, a's old Lock can neither update nor release it.
	if _, err := s.Unlock(ctx, "g", "operator", "a", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(ctx, "g", holder("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, a2, func(h *locksmith.Holder) { h.State = locksmith.HolderRebooting }); !errors.Is(err, locksmith.ErrLost) {
		t.Fatalf("update with a stale token: %v, want ErrLost", err)
	}
	if err := s.Release(ctx, a2); !errors.Is(err, locksmith.ErrLost) {
		t.Fatalf("release with a stale token: %v, want ErrLost", err)
	}
	cur, err := s.Held(ctx, "g", "a")
	if err != nil {
		t.Fatal(err)
	}
	cur, err = s.Update(ctx, cur, func(h *locksmith.Holder) { h.State, h.Note = locksmith.HolderRolledBack, "2.0 failed" })
	if err != nil || cur.Slot.Holder.State != locksmith.HolderRolledBack {
		t.Fatalf("update: %v %+v", err, cur.Slot.Holder)
	}
	// A re-lock that names no state or note keeps them: the rollback stays on record.
	if cur, err = s.TryLock(ctx, "g", holder("a")); err != nil || cur.Slot.Holder.State != locksmith.HolderRolledBack || cur.Slot.Holder.Note != "2.0 failed" {
		t.Fatalf("re-lock of a rolled-back slot: %v %+v, want state and note kept", err, cur.Slot.Holder)
	}
	if st, _ := s.State(ctx, "g"); st.Slots[0].Holder.State != locksmith.HolderRolledBack {
		t.Fatalf("stored holder after the re-lock: %+v", st.Slots[0].Holder)
	}
	if err := s.Release(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, cur); !errors.Is(err, locksmith.ErrLost) {
		t.Fatalf("second release: %v, want ErrLost", err)
	}
	st, err := s.State(ctx, "g")
	if err != nil || len(st.Slots) != 0 {
		t.Fatalf("state after release: %+v %v", st, err)
	}
}

// Each slot has a holder key naming it, created and deleted with it; a slot taken by an older
// locksmith gets one when re-locked, and a key left without its slot does not lock its id out.
func TestHolderKeys(t *testing.T) {
	s, e := newStore(t)
	ctx := t.Context()
	p := s.GroupKeyPrefix("g")
	key := func(id string) (string, bool) {
		t.Helper()
		resp, err := e.Client.Get(ctx, p+"holders/"+id)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return "", false
		}
		return string(resp.Kvs[0].Value), true
	}
	s.SetMax(ctx, "g", 3)
	a, err := s.TryLock(ctx, "g", holder("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(ctx, "g", holder("b")); err != nil {
		t.Fatal(err)
	}
	if v, ok := key("a"); !ok || v != "0" {
		t.Fatalf("holder key of a: %q %v, want slot 0", v, ok)
	}
	if err := s.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unlock(ctx, "g", "operator", "b", true); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if v, ok := key(id); ok {
			t.Fatalf("holder key of %s left after its release: %q", id, v)
		}
	}

	// A slot written before holder keys existed: the re-lock adds the key.
	old := holder("old")
	old.Version, old.AcquiredAt = locksmith.FormatVersion, time.Now().UTC()
	oldJSON, _ := json.Marshal(old)
	e.Client.Put(ctx, p+"slots/0002", string(oldJSON))
	if lk, err := s.TryLock(ctx, "g", holder("old")); err != nil || lk.Slot.Index != 2 {
		t.Fatalf("re-lock of a slot without a holder key: %+v %v", lk.Slot, err)
	}
	if v, ok := key("old"); !ok || v != "2" {
		t.Fatalf("holder key after the re-lock: %q %v, want slot 2", v, ok)
	}

	// A holder key whose slot was deleted without it (by an older locksmith): its id can lock.
	e.Client.Put(ctx, p+"holders/ghost", "1")
	if lk, err := s.TryLock(ctx, "g", holder("ghost")); err != nil || lk.Slot.Index != 0 {
		t.Fatalf("lock over a left-over holder key: %+v %v", lk.Slot, err)
	}
	if v, ok := key("ghost"); !ok || v != "0" {
		t.Fatalf("left-over holder key not rewritten: %q %v", v, ok)
	}
}

func TestLowerMaxKeepsHolders(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	s.SetMax(ctx, "g", 3)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.TryLock(ctx, "g", holder(id)); err != nil {
			t.Fatal(err)
		}
	}
	if old, err := s.SetMax(ctx, "g", 1); err != nil || old != 3 {
		t.Fatalf("set-max 1: old %d, %v", old, err)
	}
	st, _ := s.State(ctx, "g")
	if len(st.Slots) != 3 {
		t.Fatalf("holders after lowering: %d, want 3 kept", len(st.Slots))
	}
	for _, release := range []string{"a", "b"} {
		if _, err := s.TryLock(ctx, "g", holder("d")); !errors.Is(err, locksmith.ErrFull) {
			t.Fatalf("new holder admitted above max: %v", err)
		}
		if _, err := s.Unlock(ctx, "g", release, release, false); err != nil {
			t.Fatal(err)
		}
	}
	// c holds slot 2, above max 1: slot 0 is free but the group is at max.
	if _, err := s.TryLock(ctx, "g", holder("d")); !errors.Is(err, locksmith.ErrFull) {
		t.Fatalf("admitted at max with the holder above it: %v", err)
	}
	if _, err := s.TryLock(ctx, "g", holder("c")); err != nil {
		t.Fatalf("relock by c above max: %v", err)
	}
	s.Unlock(ctx, "g", "c", "c", false)
	if lk, err := s.TryLock(ctx, "g", holder("d")); err != nil || lk.Slot.Index != 0 {
		t.Fatalf("after all released: %+v %v", lk, err)
	}
}

func TestLockWaitsForRelease(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	a, err := s.TryLock(ctx, "g", holder("a"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Lock(ctx, "g", holder("b"))
		got <- err
	}()
	// A config write that does not free a slot wakes the waiter, which must wait again.
	if _, _, err := s.SetConfig(ctx, "g", func(c locksmith.GroupConfig) locksmith.GroupConfig { c.LeaseTTLSeconds = 60; return c }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		t.Fatalf("Lock returned while the slot was held: %v", err)
	case <-time.After(200 * time.Millisecond): // not a timing assertion: only gives a wrong wake-up the chance to show
	}
	if err := s.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiter never took the released slot")
	}
}

func TestLeaseExpiry(t *testing.T) {
	s, e := newStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, _, err := s.SetConfig(ctx, "g", func(c locksmith.GroupConfig) locksmith.GroupConfig {
		c.LeaseTTLSeconds, c.Stale = 1, locksmith.StaleExpire
		return c
	}); err != nil {
		t.Fatal(err)
	}
	a, err := s.TryLock(ctx, "g", holder("dead"))
	if err != nil || a.Slot.Lease == 0 {
		t.Fatalf("lock: %+v %v, want a leased slot", a, err)
	}
	// The holder never comes back; the waiter gets the slot when etcd expires the lease.
	b, err := s.Lock(ctx, "g", holder("b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, a, func(*locksmith.Holder) {}); !errors.Is(err, locksmith.ErrLost) {
		t.Fatalf("update of the expired slot: %v, want ErrLost", err)
	}
	// Rewriting a leased slot keeps its lease.
	b2, err := s.TryLock(ctx, "g", holder("b"))
	if err != nil || b2.Slot.Lease != b.Slot.Lease {
		t.Fatalf("relock lost the lease: %+v %v", b2.Slot, err)
	}
	// The holder key expires with the slot: the expired holder's is gone, b's is on b's lease.
	resp, err := e.Client.Get(ctx, s.GroupKeyPrefix("g")+"holders/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != s.GroupKeyPrefix("g")+"holders/b" || resp.Kvs[0].Lease != b.Slot.Lease {
		t.Fatalf("holder keys: %+v %v, want only b's, on lease %x", resp.Kvs, err, b.Slot.Lease)
	}
}

func TestHoldPolicyNeverExpires(t *testing.T) {
	s, e := newStore(t)
	ctx := t.Context()
	if _, _, err := s.SetConfig(ctx, "g", func(c locksmith.GroupConfig) locksmith.GroupConfig { c.LeaseTTLSeconds = 1; return c }); err != nil {
		t.Fatal(err)
	}
	a, err := s.TryLock(ctx, "g", holder("a"))
	if err != nil || a.Slot.Lease != 0 {
		t.Fatalf("hold policy attached a lease: %+v %v", a.Slot, err)
	}
	resp, err := e.Client.Get(ctx, s.GroupKeyPrefix("g")+"slots/0000")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease != 0 {
		t.Fatalf("slot key: %+v %v", resp, err)
	}
	st, _ := s.State(ctx, "g")
	if !st.Stale(st.Slots[0], a.Slot.Holder.AcquiredAt.Add(2*time.Second)) {
		t.Fatal("holder older than the TTL not reported stale")
	}
}

func TestCorruptKeys(t *testing.T) {
	s, e := newStore(t)
	ctx := t.Context()
	p := s.GroupKeyPrefix("prod/db")
	if p != locksmith.DefaultPrefix+"groups/prod%2Fdb/" {
		t.Fatalf("group prefix %q", p)
	}
	e.Client.Put(ctx, p+"slots/0000", "{not json")
	st, err := s.State(ctx, "prod/db")
	if err != nil || len(st.Slots) != 1 || st.Slots[0].Holder.ID != "corrupt:0000" {
		t.Fatalf("corrupt slot: %+v %v", st, err)
	}
	if _, err := s.TryLock(ctx, "prod/db", holder("a")); !errors.Is(err, locksmith.ErrFull) {
		t.Fatalf("a corrupt slot must count as taken: %v", err)
	}
	if _, err := s.Unlock(ctx, "prod/db", "op", "corrupt:0000", true); err != nil {
		t.Fatal(err)
	}
	// Real ids may not take the pseudo ids' prefix: such a holder could never be released, as
	// its id would name another key. One written before the rule is shown as unreadable.
	if _, err := s.TryLock(ctx, "prod/db", holder("corrupt:0007")); err == nil || !strings.Contains(err.Error(), `starts with "corrupt:"`) {
		t.Fatalf("lock with a reserved id: %v, want a refusal naming the prefix", err)
	}
	old := `{"version":1,"id":"corrupt:0007","acquired_at":"2026-01-01T00:00:00Z"}`
	e.Client.Put(ctx, p+"slots/0000", old)
	if st, _ := s.State(ctx, "prod/db"); len(st.Slots) != 1 || st.Slots[0].Holder.ID != "corrupt:0000" {
		t.Fatalf("holder with a reserved id: %+v", st.Slots)
	}
	if _, err := s.Unlock(ctx, "prod/db", "op", "corrupt:0000", true); err != nil {
		t.Fatal(err)
	}
	e.Client.Put(ctx, p+"config", `{"version":7,"max":100}`)
	if _, err := s.TryLock(ctx, "prod/db", holder("a")); err == nil {
		t.Fatal("locked under a config of an unknown version")
	}
	if _, err := s.SetMax(ctx, "prod/db", 2); err != nil {
		t.Fatalf("set-max over a bad config: %v", err)
	}
	if _, err := s.TryLock(ctx, "prod/db", holder("a")); err != nil {
		t.Fatal(err)
	}
}

func TestBadInputLeavesStateAlone(t *testing.T) {
	s, e := newStore(t)
	ctx := t.Context()
	s.TryLock(ctx, "g", holder("a"))
	before, _ := e.Client.Get(ctx, locksmith.DefaultPrefix, clientv3.WithPrefix())
	for name, err := range map[string]error{
		"empty id":       func() error { _, err := s.TryLock(ctx, "g", holder("")); return err }(),
		"empty group":    func() error { _, err := s.TryLock(ctx, "", holder("b")); return err }(),
		"bad max":        func() error { _, err := s.SetMax(ctx, "g", -1); return err }(),
		"huge max":       func() error { _, err := s.SetMax(ctx, "g", locksmith.MaxSlots+1); return err }(),
		"unlock nothing": func() error { _, err := s.Unlock(ctx, "g", "z", "z", false); return err }(),
		"reserved id":    func() error { _, err := s.TryLock(ctx, "free", holder("corrupt:0000")); return err }(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	after, _ := e.Client.Get(ctx, locksmith.DefaultPrefix, clientv3.WithPrefix())
	if before.Header.Revision != after.Header.Revision {
		t.Fatalf("rejected input wrote to etcd: revision %d -> %d", before.Header.Revision, after.Header.Revision)
	}
}

func TestUnreachable(t *testing.T) {
	s := locksmith.NewStore(etcdtest.Unreachable(t), "", nil)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := s.TryLock(ctx, "g", holder("a")); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock with etcd down: %v, want a deadline error", err)
	}
}

// Waiters get slots in the order they queued; callers that do not queue come after them, and a
// waiter that gives up leaves the queue.
func TestQueueIsFirstComeFirstServed(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	a, err := s.TryLock(ctx, "g", holder("a"))
	if err != nil {
		t.Fatal(err)
	}
	waitQueued := func(n int) locksmith.State {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := s.State(ctx, "g")
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Queue) == n {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue %+v, want %d waiters", st.Queue, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	got := make(chan locksmith.Lock, 3)
	lock := func(ctx context.Context, id string) {
		go func() {
			lk, err := s.Lock(ctx, "g", holder(id))
			if err == nil {
				got <- lk
			}
		}()
	}
	quitter, quit := context.WithCancel(ctx)
	lock(quitter, "q")
	waitQueued(1)
	lock(ctx, "b")
	waitQueued(2)
	lock(ctx, "c")
	st := waitQueued(3)
	if st.Queue[0].ID != "q" || st.Queue[1].ID != "b" || st.Queue[2].ID != "c" {
		t.Fatalf("queue order %+v", st.Queue)
	}
	quit()
	waitQueued(2)

	if err := s.Release(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLock(ctx, "g", holder("latecomer")); !errors.Is(err, locksmith.ErrFull) {
		t.Fatalf("a caller that did not queue jumped the queue: %v", err)
	}
	for _, want := range []string{"b", "c"} {
		select {
		case lk := <-got:
			if lk.Slot.Holder.ID != want {
				t.Fatalf("%s got the slot, want %s", lk.Slot.Holder.ID, want)
			}
			if err := s.Release(ctx, lk); err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never got the slot", want)
		}
	}
	if st := waitQueued(0); len(st.Slots) != 0 {
		t.Fatalf("left over: %+v", st)
	}
}

// Every write by the holder stamps SeenAt, so LastSeen moves while AcquiredAt stays.
func TestHolderWritesStampSeenAt(t *testing.T) {
	_, e := newStore(t)
	now := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	s := locksmith.NewStore(e.Client, "", func() time.Time { return now })
	lk, err := s.TryLock(t.Context(), "g", holder("a"))
	if err != nil || !lk.Slot.LastSeen().Equal(now) || !lk.Slot.Holder.SeenAt.IsZero() {
		t.Fatalf("lock: %v, last seen %v, seen at %v", err, lk.Slot.LastSeen(), lk.Slot.Holder.SeenAt)
	}
	now = now.Add(90 * time.Minute)
	if st, _ := s.State(t.Context(), "g"); !st.Unseen(st.Slots[0], now, time.Hour) {
		t.Fatal("a holder silent for 90 min is not unseen after 1h")
	}
	if lk, err = s.Touch(t.Context(), lk); err != nil {
		t.Fatal(err)
	}
	st, _ := s.State(t.Context(), "g")
	if sl := st.Slots[0]; !sl.LastSeen().Equal(now) || !sl.Holder.AcquiredAt.Equal(now.Add(-90*time.Minute)) || st.Unseen(sl, now, time.Hour) {
		t.Fatalf("after Touch: acquired %v, last seen %v", sl.Holder.AcquiredAt, sl.LastSeen())
	}
	now = now.Add(time.Minute)
	if lk, err = s.TryLock(t.Context(), "g", holder("a")); err != nil || !lk.Slot.LastSeen().Equal(now) {
		t.Fatalf("re-lock: %v, last seen %v", err, lk.Slot.LastSeen())
	}
}
