package payload

import (
	"sync/atomic"
	"testing"
)

// TestBgSyncAfterStop proves a sync asked for before stop runs, and a write noted after stop
// (a late writer) neither syncs nor panics.
func TestBgSyncAfterStop(t *testing.T) {
	var n atomic.Int32
	s := startBgSync(func() error { n.Add(1); return nil })
	s.wrote(0, bgSyncEvery)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s.wrote(bgSyncEvery, 2*bgSyncEvery)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Fatalf("%d syncs; want the one asked for before stop", n.Load())
	}
}
