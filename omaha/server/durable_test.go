package server_test

import (
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// The success report after the health gate (the first check after the update, 3/2 naming the
// previous version) is in the database when the host gets its answer: with a flush interval of
// an hour nothing else would write it, so a crash right after the answer cannot lose it. The
// plain 3/2 of a routine check is still answered before it is written.
func TestSuccessReportIsDurable(t *testing.T) {
	s, key := setup(t, omahatest.WithConfig(func(c *server.Config) { c.FlushInterval = time.Hour }))
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	h := s.Host(t, "stable", "1.0.0")
	if u := h.Check(t); u == nil {
		t.Fatal("no offer")
	}
	h.Install(t)
	h.Reboot("1.1.0")
	if u := h.Check(t); u != nil {
		t.Fatalf("offer after the update: %v", u)
	}
	// Straight from the database: no flush, no shutdown.
	in, err := s.DB.Instance(t.Context(), s.App, h.MachineID)
	if err != nil || in.State != store.StateComplete || in.Version != "1.1.0" {
		t.Fatalf("after the success report: %+v, %v; want complete on 1.1.0 in the database", in, err)
	}
	evs, err := s.DB.Events(t.Context(), store.EventFilter{AppID: s.App, MachineID: h.MachineID})
	if err != nil || len(evs) == 0 || evs[0].Type != 3 || evs[0].Result != 2 || evs[0].PreviousVersion != "1.0.0" {
		t.Fatalf("newest stored event %+v (%v), want the 3/2 from 1.0.0", evs, err)
	}
	stored := len(evs)

	h.Check(t) // routine: answered before it is written
	if evs, _ := s.DB.Events(t.Context(), store.EventFilter{AppID: s.App, MachineID: h.MachineID}); len(evs) != stored {
		t.Fatalf("a routine check was written before the flush interval: %d events, want %d", len(evs), stored)
	}
}

// If the success report is lost anyway (a crash before the commit, or a server that answered
// it early), the host's next ordinary check-in settles the instance as complete: the host
// runs the granted version and had reported it installed.
func TestNextCheckSettlesLostSuccess(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	h := s.Host(t, "stable", "1.0.0")
	if u := h.Check(t); u == nil {
		t.Fatal("no offer")
	}
	h.Install(t)
	if in := s.Instance(t, h.MachineID); in.State != string(store.StateInstalled) {
		t.Fatalf("after install: %+v", in)
	}
	h.Reboot("1.1.0")
	h.PreviousVersion = "" // the report naming 1.0.0 never arrived
	if u := h.Check(t); u != nil {
		t.Fatalf("offer after the update: %v", u)
	}
	if in := s.Instance(t, h.MachineID); in.State != string(store.StateComplete) || in.Version != "1.1.0" {
		t.Fatalf("after the next check-in: %+v, want complete on 1.1.0", in)
	}
}
