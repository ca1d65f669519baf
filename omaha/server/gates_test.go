package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// gateByName returns the check named name.
func gateByName(t *testing.T, cs []admin.GateCheck, name string) admin.GateCheck {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s in %+v", name, cs)
	return admin.GateCheck{}
}

// TestPromotionGate runs a version through the gate of stable with real hosts on beta: the
// promotion is refused (409, each check with wanted/has/passed) while beta has soaked too
// short and too few hosts committed, and changes nothing; a failing host keeps it refused;
// a forced promotion needs a reason and lands in the audit log with the checks it overrode;
// after the soak and enough commits an unforced promotion passes.
func TestPromotionGate(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	ctx, a := t.Context(), s.Admin
	s.Publish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	s.Publish(t, "beta", s.BuildPayload(t, "1.1.0", key))
	for _, bad := range []admin.Gate{
		{Channel: "stable", MinCommitted: -1},
		{Channel: "stable", MaxFailures: -5},
	} {
		if _, err := a.SetGate(ctx, s.App, bad); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("SetGate(%+v) = %v, want 400", bad, err)
		}
	}
	if _, err := a.SetGate(ctx, s.App, admin.Gate{Channel: "stable", MinSoak: admin.Duration(24 * time.Hour), MinCommitted: 2, MaxFailures: 0, MaxRollbacks: 0}); err != nil {
		t.Fatal(err)
	}
	// One beta host installs 1.1.0 and reboots into it; one fails it.
	good := s.Host(t, "beta", "1.0.0")
	if u := good.Check(t); u == nil {
		t.Fatal("beta host got no update")
	}
	good.Install(t)
	good.Reboot("1.1.0")
	good.Check(t)
	c.Add(3 * time.Hour)
	s.Flush(t)

	promote := admin.Promote{Version: "1.1.0", From: "beta", To: "stable"}
	before := snap(t, s)
	_, err := a.Promote(ctx, s.App, promote)
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
		t.Fatalf("gated promotion = %v, want 409", err)
	}
	soak, committed := gateByName(t, ae.Gates, "min_soak"), gateByName(t, ae.Gates, "min_committed")
	if soak.Passed || soak.Wanted != 86400 || soak.Has != 3*3600 || soak.Unit != "seconds" || !strings.Contains(soak.Text, "21h0m0s to go") {
		t.Errorf("soak check %+v", soak)
	}
	if committed.Passed || committed.Wanted != 2 || committed.Has != 1 || !strings.Contains(ae.Message, "1 more needed") {
		t.Errorf("committed check %+v, message %q", committed, ae.Message)
	}
	if f := gateByName(t, ae.Gates, "max_failures"); !f.Passed || f.Has != 0 {
		t.Errorf("failures check %+v", f)
	}
	if after := snap(t, s); after.String() != before.String() {
		t.Fatalf("a refused promotion changed the store:\nbefore %v\nafter  %v", before, after)
	}
	// The same answer without promoting.
	if cs, err := a.CheckGate(ctx, s.App, promote); err != nil || len(cs) != 4 || gateByName(t, cs, "min_soak").Has != 3*3600 {
		t.Fatalf("CheckGate = %+v, %v", cs, err)
	}

	// A second host commits and a third fails: soak passes later, failures do not.
	second := s.Host(t, "beta", "1.0.0")
	second.Check(t)
	second.Install(t)
	second.Reboot("1.1.0")
	second.Check(t)
	bad := s.Host(t, "beta", "1.0.0")
	bad.Check(t)
	bad.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	c.Add(22 * time.Hour)
	s.Flush(t)
	_, err = a.Promote(ctx, s.App, promote)
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict {
		t.Fatalf("promotion with a failed host = %v, want 409", err)
	}
	for _, ch := range ae.Gates {
		if ch.Passed == (ch.Name == "max_failures") {
			t.Errorf("check %+v: only max_failures should fail", ch)
		}
	}

	// Forcing needs a reason; with one it promotes and is audited with what it overrode.
	for _, p := range []admin.Promote{
		{Version: "1.1.0", From: "beta", To: "stable", Force: true},
		{Version: "1.1.0", From: "beta", To: "stable", Force: true, Reason: "line\nbreak"},
		{Version: "1.1.0", From: "beta", To: "stable", Reason: "no force"},
	} {
		if _, err := a.Promote(ctx, s.App, p); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("Promote(%+v) = %v, want 400", p, err)
		}
	}
	forced := promote
	forced.Force, forced.Reason = true, "the failure is a broken disk on one host (ticket 42)"
	if ps, err := a.Promote(ctx, s.App, forced); err != nil || len(ps) != 1 || ps[0].Version != "1.1.0" {
		t.Fatalf("forced promotion = %+v, %v", ps, err)
	}
	page, err := a.Audit(ctx, admin.AuditQuery{Target: "apps/" + s.App + "/channels/stable", Limit: 1})
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("audit: %+v %v", page, err)
	}
	var detail struct {
		Request    admin.Promote     `json:"request"`
		ForcedPast []admin.GateCheck `json:"forced_past"`
	}
	if err := json.Unmarshal(page.Entries[0].Detail, &detail); err != nil {
		t.Fatal(err)
	}
	if page.Entries[0].Action != "promote" || detail.Request.Reason != forced.Reason || !detail.Request.Force ||
		gateByName(t, detail.ForcedPast, "max_failures").Passed {
		t.Fatalf("forced promotion audit entry %+v detail %s", page.Entries[0], page.Entries[0].Detail)
	}

	// A gate that passes lets an unforced promotion through (beta → stable of 1.1.0 again is a
	// no-op for the gate; use alpha → beta with a loose gate on beta).
	s.Publish(t, "alpha", s.BuildPayload(t, "1.2.0", key))
	if _, err := a.SetGate(ctx, s.App, admin.Gate{Channel: "beta", MinSoak: admin.Duration(time.Hour), MaxFailures: -1, MaxRollbacks: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Promote(ctx, s.App, admin.Promote{Version: "1.2.0", From: "alpha", To: "beta"}); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("promotion before the soak: %v", err)
	}
	c.Add(time.Hour)
	if _, err := a.Promote(ctx, s.App, admin.Promote{Version: "1.2.0", From: "alpha", To: "beta"}); err != nil {
		t.Fatalf("promotion after the soak: %v", err)
	}
	gs, err := a.Gates(ctx, s.App)
	if err != nil || len(gs) != 2 || gs[0].Channel != "beta" || gs[1].MinCommitted != 2 {
		t.Fatalf("Gates = %+v, %v", gs, err)
	}
	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {basic(s.ReadOnlyToken)}})
	for _, want := range []string{`<table class="gates">`, "<td>stable</td><td>beta</td><td>24h0m0s</td>", "<td>beta</td><td>alpha</td><td>1h0m0s</td><td class=\"n\">0</td><td class=\"n\">any</td>"} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("dashboard (%d) lacks %q", resp.StatusCode, want)
		}
	}
	if err := a.DeleteGate(ctx, s.App, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteGate(ctx, s.App, "beta"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("deleting a missing gate: %v", err)
	}
	body, _ = get(t, s, s.URL+"/metrics", nil)
	for _, want := range []string{
		`omahad_promotions_total{channel="stable",result="refused"} 2`,
		`omahad_promotions_total{channel="stable",result="forced"} 1`,
		`omahad_promotions_total{channel="beta",result="refused"} 1`,
		`omahad_promotions_total{channel="beta",result="promoted"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if es, _ := s.DB.Audit(ctx, store.AuditFilter{Target: "apps/" + s.App + "/channels/beta"}); len(es) != 4 {
		t.Errorf("beta audit entries (publish, gate set, promote, gate delete): %+v", es)
	}
}
