package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
)

// carries returns the version channel carries for amd64-usr ("" for none).
func carries(t *testing.T, s *omahatest.Server, channel string) string {
	t.Helper()
	for _, c := range s.Status(t).Channels {
		if c.Name == channel {
			return c.Packages["amd64-usr"].Version
		}
	}
	return ""
}

// commit walks a host through an update to version and its first check after the reboot.
func commit(t *testing.T, h *omahatest.Host, version string) {
	t.Helper()
	if u := h.Check(t); u == nil {
		t.Fatalf("host on %s got no update to %s", h.Track, version)
	}
	h.Install(t)
	h.Reboot(version)
	h.Check(t)
}

// TestAutoPromotion lets a good build go alpha → beta → stable by itself under automatic gates,
// each step only once its gate passes, and keeps a broken build (a host failed it; the alpha
// group halts) on alpha however long it waits. The server's promotions and the halt are in the
// audit log as omahad's, and counted.
func TestAutoPromotion(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now; cfg.AutoPromoteEvery = -1 }))
	ctx, a := t.Context(), s.Admin
	round := func() {
		t.Helper()
		s.Flush(t)
		if err := s.Server.AutoPromoteOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []admin.Gate{
		{Channel: "beta", MinSoak: admin.Duration(time.Hour), MinCommitted: 1, MaxFailures: 0, MaxRollbacks: 0, Auto: true},
		{Channel: "stable", MinSoak: admin.Duration(2 * time.Hour), MinCommitted: 1, MaxFailures: 0, MaxRollbacks: 0, Auto: true},
	} {
		if _, err := a.SetGate(ctx, s.App, g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.SetGate(ctx, s.App, admin.Gate{Channel: "alpha", Auto: true}); err == nil {
		t.Fatal("an automatic gate on alpha (nothing before it) was accepted")
	}
	s.UpdateGroup(t, "alpha", admin.GroupChange{HaltOnFailures: new(int64(1))})
	s.Publish(t, "alpha", s.BuildPayload(t, "1.1.0", key))
	commit(t, s.Host(t, "alpha", "1.0.0"), "1.1.0")
	c.Add(30 * time.Minute)
	round()
	if v := carries(t, s, "beta"); v != "" {
		t.Fatalf("beta carries %q before alpha soaked an hour", v)
	}
	c.Add(30 * time.Minute)
	round()
	if v := carries(t, s, "beta"); v != "1.1.0" {
		t.Fatalf("beta carries %q after the gate passed, want 1.1.0", v)
	}
	if v := carries(t, s, "stable"); v != "" {
		t.Fatalf("stable carries %q with nothing soaked on beta", v)
	}
	commit(t, s.Host(t, "beta", "1.0.0"), "1.1.0")
	c.Add(2 * time.Hour)
	round()
	if v := carries(t, s, "stable"); v != "1.1.0" {
		t.Fatalf("stable carries %q after beta's soak, want 1.1.0", v)
	}
	round() // nothing left to do: no second promotion
	// A broken build stops on alpha: its first host fails it.
	s.Publish(t, "alpha", s.BuildPayload(t, "1.2.0", key))
	commit(t, s.Host(t, "alpha", "1.1.0"), "1.2.0")
	bad := s.Host(t, "alpha", "1.1.0")
	if bad.Check(t) == nil {
		t.Fatal("alpha host got no 1.2.0")
	}
	bad.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	c.Add(48 * time.Hour)
	round()
	if v := carries(t, s, "beta"); v != "1.1.0" {
		t.Fatalf("beta carries %q: a build a host failed was promoted", v)
	}
	page, err := a.Audit(ctx, admin.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var server []string
	for _, e := range page.Entries {
		if e.Who == "omahad" {
			server = append(server, e.Action+" "+strings.TrimPrefix(e.Target, "apps/"+s.App+"/"))
		}
	}
	if want := "group.halt groups/alpha|promote.auto channels/stable|promote.auto channels/beta"; strings.Join(server, "|") != want {
		t.Fatalf("server's audit entries %q, want %q", server, want)
	}
	body, _ := get(t, s, s.URL+"/metrics", nil)
	for _, want := range []string{`omahad_promotions_total{channel="beta",result="auto"} 1`, `omahad_promotions_total{channel="stable",result="auto"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
