package server_test

import (
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
)

// TestHaltOnFailures runs the automatic halt end to end: bad thresholds are refused and change
// nothing; the second distinct host failing the offered version pauses the group with a
// reason; hosts then get noupdate at once (re-offers included); status says why; re-enabling
// clears the reason and offers again.
func TestHaltOnFailures(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	g := s.CreateGroup(t, "canary", "stable", admin.Policy{Enabled: true, HaltOnFailures: 2})
	if g.Policy.HaltOnFailures != 2 || g.Policy.HaltedReason != "" {
		t.Fatalf("created %+v", g.Policy)
	}
	ctx, a := t.Context(), s.Admin
	before, err := a.Groups(ctx, s.App)
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		do   func() error
	}{
		{"create negative", func() error {
			_, err := a.CreateGroup(ctx, s.App, admin.Group{Name: "x", Channel: "stable", Policy: admin.Policy{Enabled: true, HaltOnFailures: -1}})
			return err
		}},
		{"update negative", func() error {
			_, err := a.UpdateGroup(ctx, s.App, "canary", admin.GroupChange{HaltOnFailures: ptr(int64(-3)), MaxUpdates: ptr(int64(7))})
			return err
		}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); !errors.Is(err, admin.ErrBadRequest) {
				t.Fatalf("err = %v, want a bad request", err)
			}
			after, err := a.Groups(ctx, s.App)
			if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("groups changed:\n%v\n%v", before, after)
			}
		})
	}

	hosts := make([]*omahatest.Host, 3)
	for i := range hosts {
		hosts[i] = s.Host(t, "canary", "1.0.0")
		if hosts[i].Check(t) == nil {
			t.Fatal("no offer before any failure")
		}
	}
	// One host fails, then reports its rollback: still one host.
	hosts[0].Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	hosts[0].CheckAfterRollback(t)
	s.Flush(t)
	if got, err := a.Group(ctx, s.App, "canary"); err != nil || !got.Policy.Enabled {
		t.Fatalf("halted after one host: %+v %v", got.Policy, err)
	}
	// The second host halts the group.
	hosts[1].Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeDownloadTransferError|omaha.ErrorCodeFlagTestOmahaURL)
	s.Flush(t)
	got, err := a.Group(ctx, s.App, "canary")
	want := fmt.Sprintf("version 1.1.0: 2 host(s) failed (machine %s, error 9 DownloadTransferError); halt_on_failures=2", hosts[1].MachineID)
	if err != nil || got.Policy.Enabled || got.Policy.HaltedReason != want || got.Policy.HaltedAt.IsZero() {
		t.Fatalf("after the second failure: %+v %v\nwant reason %q", got.Policy, err, want)
	}
	if hosts[2].Check(t) != nil || s.Host(t, "canary", "1.0.0").Check(t) != nil {
		t.Fatal("an update was offered in a halted group")
	}
	st := s.Status(t)
	found := false
	for _, gs := range st.Groups {
		found = found || gs.Group.Name == "canary" && gs.Group.Policy.HaltedReason == want
	}
	if !found {
		t.Fatalf("status does not show the halt: %+v", st.Groups)
	}
	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {"Bearer " + s.ReadOnlyToken}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "HALTED") || !strings.Contains(html.UnescapeString(string(body)), want) {
		t.Errorf("dashboard (%d) does not show the halt and %q", resp.StatusCode, want)
	}
	// Re-enabling clears the reason; the host holding its grant gets the update again.
	got = s.UpdateGroup(t, "canary", admin.GroupChange{Enabled: ptr(true)})
	if !got.Policy.Enabled || got.Policy.HaltedReason != "" || !got.Policy.HaltedAt.IsZero() || got.Policy.HaltOnFailures != 2 {
		t.Fatalf("re-enabled: %+v", got.Policy)
	}
	if hosts[2].Check(t) == nil {
		t.Fatal("no offer after re-enabling")
	}
}

// TestHaltIgnoresErrorsAfterUpdate: an error a host reports once it runs the version it was
// granted and has checked in on it (update_engine reports an update check answered 503 as
// 3/0 with 2000+HTTP status) is not a failure of that version: it neither counts toward
// HaltOnFailures nor toward a gate's max_failures, and the host stays complete. An error a
// host reports from the new version before that check (the agent's failed health gate, sent
// before it rolls back) still is one.
func TestHaltIgnoresErrorsAfterUpdate(t *testing.T) {
	s, key := setup(t)
	ctx, a := t.Context(), s.Admin
	s.Publish(t, "beta", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "beta", admin.Policy{Enabled: true, HaltOnFailures: 2})
	if _, err := a.SetGate(ctx, s.App, admin.Gate{Channel: "stable", MaxFailures: 0, MaxRollbacks: -1}); err != nil {
		t.Fatal(err)
	}
	done, unhealthy := s.Host(t, "fleet", "1.0.0"), s.Host(t, "fleet", "1.0.0")
	for _, h := range []*omahatest.Host{done, unhealthy} {
		if h.Check(t) == nil {
			t.Fatal("no offer")
		}
		h.Install(t)
		h.Reboot("1.1.0")
	}
	if done.Check(t) != nil {
		t.Fatal("offered again after the update")
	}
	if in := s.Instance(t, done.MachineID); in.State != "complete" {
		t.Fatalf("state after the update: %q, want complete", in.State)
	}
	httpError := omaha.ErrorCodeOmahaRequestHTTPResponseBase + 503 | omaha.ErrorCodeFlagTestOmahaURL
	done.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, httpError)
	unhealthy.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeHealthGateFailed)
	s.Flush(t)

	if g, err := a.Group(ctx, s.App, "fleet"); err != nil || !g.Policy.Enabled {
		t.Errorf("halted by a host's error after its update: %+v %v", g.Policy, err)
	}
	if in := s.Instance(t, done.MachineID); in.State != "complete" || in.LastError != int64(httpError) {
		t.Errorf("after its error: state %q, last error %d; want complete, %d", in.State, in.LastError, httpError)
	}
	if in := s.Instance(t, unhealthy.MachineID); in.State != "error" {
		t.Errorf("after its failed health gate: state %q, want error", in.State)
	}
	for _, e := range s.Events(t, done.MachineID) {
		if e.ErrorCode == int64(httpError) && e.TargetVersion != "" {
			t.Errorf("the error after the update is recorded as a failure of %s", e.TargetVersion)
		}
	}
	cs, err := a.CheckGate(ctx, s.App, admin.Promote{Version: "1.1.0", From: "beta", To: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	if c := gateByName(t, cs, "max_failures"); c.Has != 1 {
		t.Errorf("max_failures counts %d hosts, want 1 (the unhealthy one): %s", c.Has, c.Text)
	}
}
