package payload_test

import (
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/twinslot/twinslot/payload"
)

// syncSlot counts Syncs, notes whether anything was written after the last one, and can fail one.
type syncSlot struct {
	*memSlot
	mu    sync.Mutex
	syncs int
	dirty bool // written since the last Sync
	fail  int  // the Sync (counted from 1) that fails; 0: none
}

func (s *syncSlot) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	return s.memSlot.WriteAt(p, off)
}

func (s *syncSlot) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	s.dirty = false
	if s.syncs == s.fail {
		return errors.New("input/output error (simulated)")
	}
	return nil
}

// TestInstallSyncsInBackground proves an install syncs the target while it writes, not only at
// the end, and still syncs after its last write.
func TestInstallSyncsInBackground(t *testing.T) {
	payload.SetBgSyncEvery(t, 256<<10)
	f := newInstallFixture(t, 2<<20, 0.05)
	slot := &syncSlot{memSlot: newMemSlot(len(f.new))}
	res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesWritten < 1<<20 {
		t.Fatalf("wrote %d bytes; the test needs several background syncs' worth", res.BytesWritten)
	}
	if slot.syncs < 2 || slot.dirty {
		t.Fatalf("%d syncs, written after the last: %v; want the background ones and a last one after every write", slot.syncs, slot.dirty)
	}
	if slot.sum() != sha256.Sum256(f.new) {
		t.Fatal("slot does not hold the image")
	}
}

// TestInstallBackgroundSyncError proves a failed background sync fails the install even when
// the last sync succeeds (an fsync error is reported to one caller only).
func TestInstallBackgroundSyncError(t *testing.T) {
	payload.SetBgSyncEvery(t, 256<<10)
	f := newInstallFixture(t, 2<<20, 0.05)
	slot := &syncSlot{memSlot: newMemSlot(len(f.new)), fail: 1}
	_, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts())
	if err == nil || !strings.Contains(err.Error(), "sync target slot") || !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("err = %v; want the background sync's error", err)
	}
	if slot.syncs < 2 {
		t.Fatalf("%d syncs; the failure should come from a background sync before the last one", slot.syncs)
	}
}
