package server_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// groupStatus returns the status of group name.
func groupStatus(t *testing.T, s *omahatest.Server, name string) admin.GroupStatus {
	t.Helper()
	for _, g := range s.Status(t).Groups {
		if g.Group.Name == name {
			return g
		}
	}
	t.Fatalf("no group %q in the status", name)
	return admin.GroupStatus{}
}

// TestWaves rolls a version out to a group in two waves: only the hosts of the first wave (by
// their stable position) are offered it, the others get noupdate (reason "wave") and are not
// granted; the second wave opens by itself once the first soaked, and the status, the gauges
// and the audit log say so.
func TestWaves(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now; cfg.AdvanceWavesEvery = -1 }))
	ctx := t.Context()
	s.UpdateGroup(t, "stable", admin.GroupChange{Waves: new("20%:1h, 100%")})
	hosts := make([]*omahatest.Host, 60)
	for i := range hosts {
		hosts[i] = s.Host(t, "stable", "1.0.0")
	}
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	first := 0
	for _, h := range hosts {
		inFirst := store.WavePosition(s.App, h.MachineID) < 2000
		if inFirst {
			first++
		}
		if got := h.Check(t) != nil; got != inFirst {
			t.Fatalf("host at position %d offered = %v in the 20%% wave", store.WavePosition(s.App, h.MachineID), got)
		}
	}
	if first == 0 || first == len(hosts) {
		t.Fatalf("%d of %d hosts in the first wave: pick other ids", first, len(hosts))
	}
	s.Flush(t)
	held := 0
	for _, in := range s.Instances(t) {
		if in.GrantedVersion == "" {
			held++
			if in.State != string(store.StateOnHold) {
				t.Errorf("host outside the wave is %s, want onhold", in.State)
			}
		}
	}
	if held != len(hosts)-first {
		t.Fatalf("%d hosts without a grant, want %d", held, len(hosts)-first)
	}
	if err := s.Server.AdvanceWavesOnce(ctx); err != nil {
		t.Fatal(err)
	}
	r := groupStatus(t, s, "stable").Rollout
	if r == nil || r.Version != "1.1.0" || r.Wave != 0 || r.Waves != 2 || r.SharePercent != 20 || r.Held != "soaking" ||
		!r.NextAt.Equal(c.Now().Add(time.Hour)) {
		t.Fatalf("rollout status %+v", r)
	}
	c.Add(59 * time.Minute)
	if err := s.Server.AdvanceWavesOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if groupStatus(t, s, "stable").Rollout.Wave != 0 {
		t.Fatal("the second wave opened before the first soaked")
	}
	c.Add(time.Minute)
	if err := s.Server.AdvanceWavesOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if r := groupStatus(t, s, "stable").Rollout; r.Wave != 1 || r.SharePercent != 100 || r.Held != "" {
		t.Fatalf("rollout after the soak %+v", r)
	}
	for _, h := range hosts {
		if h.Check(t) == nil {
			t.Fatalf("host at position %d not offered in the last wave", store.WavePosition(s.App, h.MachineID))
		}
	}
	body, _ := get(t, s, s.URL+"/metrics", nil)
	labels := `{app="` + s.Status(t).App.Name + `",group="stable"}`
	for _, want := range []string{
		`omahad_update_checks_total{reason="wave",status="noupdate"} ` + strconv.Itoa(len(hosts)-first),
		`omahad_wave` + labels + ` 1`,
		`omahad_wave_hosts_share` + labels + ` 1`,
		`omahad_waves_opened_total 2`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	page, err := s.Admin.Audit(ctx, admin.AuditQuery{Target: "apps/" + s.App + "/groups/stable"})
	if err != nil {
		t.Fatal(err)
	}
	var waves []admin.AuditEntry
	for _, e := range page.Entries {
		if e.Action == "group.wave" {
			waves = append(waves, e)
		}
	}
	if len(waves) != 2 || waves[0].Who != "omahad" || !strings.Contains(strings.Join(strings.Fields(string(waves[0].Detail)), ""), `"wave":1,`) {
		t.Fatalf("audit of wave openings: %+v", waves)
	}
}

// TestOfficeHours holds new offers outside the group's office hours (reason "office-hours")
// in the group's time zone, across Berlin's change to summer time, while a host granted within
// them keeps its grant.
func TestOfficeHours(t *testing.T) {
	c := newClock()
	c.now = time.Date(2026, 3, 27, 15, 45, 0, 0, time.UTC) // Friday 16:45 in Berlin (CET)
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now; cfg.AdvanceWavesEvery = -1 }))
	s.UpdateGroup(t, "stable", admin.GroupChange{OfficeHours: new("Mon-Fri 09:00-17:00 Europe/Berlin")})
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	early := s.Host(t, "stable", "1.0.0")
	if early.Check(t) == nil {
		t.Fatal("no offer within office hours")
	}
	c.Add(30 * time.Minute) // 17:15 Berlin; the grant (update timeout 1h) still holds
	late := s.Host(t, "stable", "1.0.0")
	if late.Check(t) != nil {
		t.Fatal("offered after office hours")
	}
	if early.Check(t) == nil {
		t.Fatal("a host granted within office hours lost its grant after them")
	}
	if r := groupStatus(t, s, "stable").Rollout; r == nil || r.OfficeHoursOpen || r.Waves != 0 {
		t.Fatalf("rollout status %+v", r)
	}
	c.now = time.Date(2026, 3, 30, 6, 59, 0, 0, time.UTC) // Monday 08:59 in Berlin (CEST)
	if late.Check(t) != nil {
		t.Fatal("offered before office hours on Monday")
	}
	c.Add(time.Minute)
	if late.Check(t) == nil {
		t.Fatal("no offer at 09:00 summer time")
	}
	body, _ := get(t, s, s.URL+"/metrics", nil)
	if want := `omahad_update_checks_total{reason="office-hours",status="noupdate"} 2`; !strings.Contains(string(body), want+"\n") {
		t.Errorf("metrics lack %q", want)
	}
}

// TestRolloutSpecErrors: bad waves or office hours are refused (400) with what is wrong, and
// nothing is stored.
func TestRolloutSpecErrors(t *testing.T) {
	s, _ := setup(t)
	ctx := t.Context()
	before, err := s.Admin.Group(ctx, s.App, "stable")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []struct {
		change admin.GroupChange
		want   string
	}{
		{admin.GroupChange{OfficeHours: new("Mon-Fri 09:00-25:00 Europe/Berlin")}, `"25:00" is not a time of day`},
		{admin.GroupChange{OfficeHours: new("Mon-Fri 09:00-17:00 Europe/Nowhere")}, `unknown time zone "Europe/Nowhere"`},
		{admin.GroupChange{Waves: new("10%:1h,50%:1h"), MaxUpdates: new(int64(5))}, "the last wave is 100%"},
	} {
		_, err := s.Admin.UpdateGroup(ctx, s.App, "stable", ch.change)
		var ae *admin.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, ch.want) {
			t.Errorf("UpdateGroup(%+v) = %v, want 400 saying %q", ch.change, err, ch.want)
		}
	}
	after, err := s.Admin.Group(ctx, s.App, "stable")
	if err != nil || after != before {
		t.Fatalf("group changed by refused updates:\n%+v\n%+v (%v)", before, after, err)
	}
	if _, err := s.Admin.CreateGroup(ctx, s.App, admin.Group{Name: "night", Channel: "stable",
		Policy: admin.Policy{Enabled: true, OfficeHours: "22:00-06:00 Moon/Base"}}); err == nil {
		t.Fatal("a group with an unknown zone was created")
	}
	if gs, _ := s.Admin.Groups(ctx, s.App); len(gs) != 3 {
		t.Fatalf("groups after a refused create: %d", len(gs))
	}
}
