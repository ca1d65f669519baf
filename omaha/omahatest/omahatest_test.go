package omahatest_test

import (
	"testing"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// TestHelpers runs the flow a host test runs: app, publish, promote, check, install, reboot.
func TestHelpers(t *testing.T) {
	s := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	s.CreateApp(t, "{"+payload.DefaultAppID+"}", payloadtest.TrustRoot(t, 1, 0, key))
	if s.App != payload.DefaultAppID {
		t.Fatalf("App = %q", s.App)
	}
	h := s.Host(t, "beta", "1.0.0")
	if u := h.Check(t); u != nil {
		t.Fatalf("offer before any publish: %v", u)
	}
	p := s.Publish(t, "alpha", s.BuildPayload(t, "1.1.0", key))
	s.Promote(t, p.Version, "alpha", "beta")
	u := h.Check(t)
	if u == nil || u.Version != "1.1.0" {
		t.Fatalf("offer = %v", u)
	}
	h.Install(t)
	h.Reboot(u.Version)
	if u := h.Check(t); u != nil {
		t.Fatalf("offer after the update: %v", u)
	}
	if in := s.Instance(t, h.MachineID); in.State != "complete" || in.Version != "1.1.0" {
		t.Fatalf("instance %+v", in)
	}
	if evs := s.Events(t, h.MachineID); len(evs) != 6 || evs[2].Type != 13 || evs[5].PreviousVersion != "1.0.0" {
		t.Fatalf("events %+v", evs)
	}
	if st := s.Status(t); len(st.Groups) != 3 {
		t.Fatalf("status %+v", st)
	}
}
