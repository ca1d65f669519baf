package store_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // office hours in named zones on a machine without tzdata

	"github.com/twinslot/twinslot/omaha/store"
)

func TestParseWaves(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       string // canonical form; "" with bad set = error
		bad        string // a word the error must contain
	}{
		{name: "no percent", spec: "10:1h,100%", bad: "no % share"},
		{name: "zero share", spec: "0%:1h,100%", bad: "above 0"},
		{name: "over 100", spec: "150%", bad: "at most 100"},
		{name: "three decimals", spec: "0.001%:1h,100%", bad: "two decimals"},
		{name: "decreasing", spec: "50%:1h,10%:1h,100%", bad: "shares increase"},
		{name: "equal", spec: "10%:1h,10%:1h,100%", bad: "shares increase"},
		{name: "last not 100", spec: "1%:1h,50%", bad: "the last wave is 100%"},
		{name: "no soak", spec: "1%,100%", bad: "every wave but the last soaks"},
		{name: "bad soak", spec: "1%:soon,100%", bad: "not a duration"},
		{name: "soak on last", spec: "1%:1h,100%:1h", bad: "nothing comes after it"},
		{name: "too many", spec: strings.Repeat("1%:1h,", store.MaxWaves) + "100%", bad: "at most 16"},
		{name: "NaN", spec: "NaN%:1h,100%", bad: "percentage"},
		{name: "none", spec: "none", want: ""},
		{name: "empty", spec: "  ", want: ""},
		{name: "one wave", spec: "100%", want: "100%"},
		{name: "brief's", spec: "1%:1h, 10%:2h ,50%:4h,100%", want: "1%:1h,10%:2h,50%:4h,100%"},
		{name: "fractions", spec: "0.5%:90m,12.25%:1h30m,100%", want: "0.5%:90m,12.25%:90m,100%"},
		{name: "seconds", spec: "1%:90s,100%", want: "1%:1m30s,100%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.NormalWaves(tc.spec)
			if tc.bad != "" {
				var se *store.SpecError
				if !errors.As(err, &se) || !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.bad) || se.What != "waves" {
					t.Fatalf("NormalWaves(%q) = %q, %v; want a waves SpecError saying %q", tc.spec, got, err, tc.bad)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalWaves(%q) = %q, %v; want %q", tc.spec, got, err, tc.want)
			}
			if again, err := store.NormalWaves(got); err != nil || again != got {
				t.Fatalf("the canonical form %q does not read back: %q, %v", got, again, err)
			}
		})
	}
}

func TestParseOfficeHours(t *testing.T) {
	for _, tc := range []struct {
		name, spec, want, bad string
	}{
		{name: "hour 25", spec: "Mon-Fri 09:00-25:00 UTC", bad: `"25:00" is not a time of day`},
		{name: "minute 60", spec: "09:60-17:00", bad: "not a time of day"},
		{name: "one digit", spec: "9:00-17:00", bad: "not a time of day"},
		{name: "24 as start", spec: "24:00-06:00", bad: "not a time of day"},
		{name: "empty range", spec: "Mon 09:00-09:00", bad: "empty"},
		{name: "no range", spec: "Mon 09:00 UTC", bad: "not a range"},
		{name: "unknown zone", spec: "Mon-Fri 09:00-17:00 Europe/Atlantis", bad: `unknown time zone "Europe/Atlantis"`},
		{name: "local zone", spec: "09:00-17:00 Local", bad: "name the zone"},
		{name: "bad day", spec: "Monday-Fri 09:00-17:00", bad: `"Monday" is not a day`},
		{name: "empty window", spec: "Mon 09:00-17:00;;", bad: "empty window"},
		{name: "extra word", spec: "Mon 09:00-17:00 UTC please", bad: "not DAYS"},
		{name: "none", spec: "none", want: ""},
		{name: "brief's", spec: "Mon-Fri  09:00-17:00 Europe/Berlin", want: "Mon-Fri 09:00-17:00 Europe/Berlin"},
		{name: "several", spec: "Mon-Fri 09:00-17:00 Europe/Berlin;Sat 10:00-12:00", want: "Mon-Fri 09:00-17:00 Europe/Berlin; Sat 10:00-12:00"},
		{name: "to midnight", spec: "sat,sun 20:00-24:00 America/New_York", want: "sat,sun 20:00-24:00 America/New_York"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := store.NormalOfficeHours(tc.spec)
			if tc.bad != "" {
				var se *store.SpecError
				if !errors.As(err, &se) || !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), tc.bad) || se.What != "office hours" {
					t.Fatalf("NormalOfficeHours(%q) = %q, %v; want an office-hours SpecError saying %q", tc.spec, got, err, tc.bad)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalOfficeHours(%q) = %q, %v; want %q", tc.spec, got, err, tc.want)
			}
		})
	}
}

// TestOfficeHoursOpen checks windows at their edges, across Berlin's change to summer time
// (29 March 2026: 09:00 is 08:00 UTC on the Friday before and 07:00 UTC on the Monday after),
// past midnight, and several windows.
func TestOfficeHoursOpen(t *testing.T) {
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tc := range []struct {
		spec string
		at   string
		open bool
	}{
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-27T07:59:00Z", false}, // Fri 08:59 CET
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-27T08:00:00Z", true},  // Fri 09:00 CET
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-27T15:59:00Z", true},  // Fri 16:59 CET
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-27T16:00:00Z", false}, // Fri 17:00 CET
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-28T10:00:00Z", false}, // Saturday
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-30T06:59:00Z", false}, // Mon 08:59 CEST
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-30T07:00:00Z", true},  // Mon 09:00 CEST
		{"Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-30T15:00:00Z", false}, // Mon 17:00 CEST
		{"Fri 22:00-06:00 UTC", "2026-03-27T23:00:00Z", true},                // Friday night
		{"Fri 22:00-06:00 UTC", "2026-03-28T05:59:00Z", true},                // Saturday morning
		{"Fri 22:00-06:00 UTC", "2026-03-28T06:00:00Z", false},
		{"Fri 22:00-06:00 UTC", "2026-03-27T05:00:00Z", false}, // Friday morning: Thursday is not listed
		{"Fri-Mon 00:00-24:00", "2026-03-30T23:59:00Z", true},  // a range across the week's end
		{"Fri-Mon 00:00-24:00", "2026-03-31T00:00:00Z", false},
		{"Mon 09:00-10:00 UTC; Tue 11:00-12:00 Asia/Tokyo", "2026-03-31T02:30:00Z", true},
		{"Mon 09:00-10:00 UTC; Tue 11:00-12:00 Asia/Tokyo", "2026-03-31T09:30:00Z", false},
		{"none", "2026-03-28T03:00:00Z", true},
	} {
		o, err := store.ParseOfficeHours(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.Open(utc(tc.at)); got != tc.open {
			t.Errorf("%q at %s: open = %v, want %v", tc.spec, tc.at, got, tc.open)
		}
	}
}

// TestWavePosition: a machine's position never changes, does not depend on the id's case, and
// over 10,000 machines each wave holds close to its share.
func TestWavePosition(t *testing.T) {
	const n = 10_000
	ws, err := store.ParseWaves("1%:1h,10%:1h,50%:1h,100%")
	if err != nil {
		t.Fatal(err)
	}
	in := make([]int, len(ws))
	for i := range n {
		m := fmt.Sprintf("%032x", uint64(i)*0x9e3779b97f4a7c15)
		p := store.WavePosition(appID, m)
		if p < 0 || p >= store.WaveScale || p != store.WavePosition(appID, strings.ToUpper(m)) {
			t.Fatalf("position of %s = %d (upper case: %d)", m, p, store.WavePosition(appID, strings.ToUpper(m)))
		}
		was := false
		for k := range ws {
			now := store.InWave(ws, k, p)
			if was && !now {
				t.Fatalf("machine %s is in wave %d but not in wave %d", m, k-1, k)
			}
			if now {
				in[k]++
			}
			was = now
		}
	}
	for k, w := range ws {
		want := float64(w.Share) / store.WaveScale
		got := float64(in[k]) / n
		// Binomial standard deviation at n = 10,000 is at most 0.5%; allow four of them.
		if d := got - want; d > 0.02 || d < -0.02 || (want < 0.05 && (d > 0.005 || d < -0.005)) {
			t.Errorf("wave %d (%s): %.2f%% of machines, want about %.2f%%", k, store.FormatWaves(ws[k:k+1]), got*100, want*100)
		}
	}
	if in[len(ws)-1] != n {
		t.Errorf("the last wave holds %d of %d machines", in[len(ws)-1], n)
	}
	if a, b := store.WavePosition(appID, machine(1)), store.WavePosition("11111111-2222-4333-8444-555555555555", machine(1)); a == b {
		t.Logf("the same position in two apps (possible, 1 in %d)", store.WaveScale)
	}
}

func testWaves(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	if _, err := db.AddPackage(ctx, pkg("1.0.0", 1), "stable", t0); err != nil {
		t.Fatal(err)
	}
	g := groupByName(t, db, "stable")
	// Bad specs change nothing, and say what is wrong.
	for _, bad := range []func(*store.Group){
		func(g *store.Group) { g.Policy.Waves = "10%:1h,5%:1h,100%" },
		func(g *store.Group) { g.Policy.OfficeHours = "Mon-Fri 09:00-25:00 Europe/Berlin" },
		func(g *store.Group) { g.Policy.OfficeHours = "Mon-Fri 09:00-17:00 Mars/Olympus" },
	} {
		unchanged(t, db, store.ErrInvalid, func() error {
			_, err := db.UpdateGroup(ctx, appID, g.ID, bad, t0)
			return err
		})
	}
	if _, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "canary", Channel: "stable",
		Policy: store.Policy{Enabled: true, Waves: "100%:1h"}}, t0); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("create with bad waves: %v", err)
	}
	// Without waves, AdvanceWave has nothing to do.
	if r, err := db.AdvanceWave(ctx, appID, g.ID, "1.0.0", t0); err != nil || r.Opened {
		t.Fatalf("AdvanceWave without waves = %+v, %v", r, err)
	}
	g, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) {
		g.Policy.Waves, g.Policy.OfficeHours, g.Policy.HaltOnFailures = "10%:1h, 50%:2h,100%", "Mon-Fri  09:00-17:00 Europe/Berlin", 1
	}, t0)
	if err != nil || g.Policy.Waves != "10%:1h,50%:2h,100%" || g.Policy.OfficeHours != "Mon-Fri 09:00-17:00 Europe/Berlin" {
		t.Fatalf("stored policy %+v, %v; want the canonical specs", g.Policy, err)
	}
	step := func(at time.Time, version string, wantWave int, wantOpened bool) {
		t.Helper()
		r, err := db.AdvanceWave(ctx, appID, g.ID, version, at)
		if err != nil || r.State.Wave != wantWave || r.Opened != wantOpened {
			t.Fatalf("AdvanceWave(%s, %s) = %+v, %v; want wave %d opened=%v", version, at.Sub(t0), r, err, wantWave, wantOpened)
		}
	}
	step(t0, "0.9.0", 0, false) // not offered by the channel: nothing
	// Replicas asking at once: the first wave is recorded once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := 0
	for range 8 {
		wg.Go(func() {
			r, err := db.AdvanceWave(ctx, appID, g.ID, "1.0.0", t0)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Opened {
				opened++
			}
		})
	}
	wg.Wait()
	if opened != 1 {
		t.Fatalf("8 concurrent AdvanceWave calls opened the first wave %d times, want once", opened)
	}
	step(t0, "1.0.0", 0, false) // once
	step(t0.Add(59*time.Minute), "1.0.0", 0, false)
	step(t0.Add(time.Hour), "1.0.0", 1, true)
	step(t0.Add(time.Hour), "1.0.0", 1, false)
	// A pause stops the waves; resuming lets them go on.
	if _, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Enabled = false }, t0); err != nil {
		t.Fatal(err)
	}
	step(t0.Add(5*time.Hour), "1.0.0", 1, false)
	if _, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Enabled = true }, t0); err != nil {
		t.Fatal(err)
	}
	step(t0.Add(5*time.Hour), "1.0.0", 2, true)
	step(t0.Add(50*time.Hour), "1.0.0", 2, false) // the last wave stays
	// A new version starts at the first wave again; a halted group stays at its wave.
	if _, err := db.AddPackage(ctx, pkg("1.0.1", 2), "stable", t0.Add(50*time.Hour)); err != nil {
		t.Fatal(err)
	}
	step(t0.Add(50*time.Hour), "1.0.1", 0, true)
	host := candidate(g.ID, 1, t0.Add(50*time.Hour))
	host.GrantedVersion = "1.0.1"
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{host}, Events: []store.Event{{AppID: appID, MachineID: host.MachineID,
		GroupID: g.ID, Type: 3, Result: 0, ErrorCode: 1001, Version: "1.0.0", TargetVersion: "1.0.1", At: t0.Add(50 * time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if g := groupByName(t, db, "stable"); g.Policy.HaltedReason == "" {
		t.Fatalf("group not halted: %+v", g.Policy)
	}
	step(t0.Add(60*time.Hour), "1.0.1", 0, false)
	ws, err := db.WaveStates(ctx, appID)
	if err != nil || len(ws) != 2 || ws[0].Version != "1.0.0" || ws[0].Wave != 2 || !ws[0].Opened.Equal(t0.Add(5*time.Hour)) ||
		ws[1].Version != "1.0.1" || ws[1].Wave != 0 {
		t.Fatalf("WaveStates = %+v, %v", ws, err)
	}
	c, err := db.Catalog(ctx)
	if err != nil || fmt.Sprint(c.Waves) != fmt.Sprint(ws) {
		t.Fatalf("catalog waves = %+v, %v; want %+v", c.Waves, err, ws)
	}
	if _, err := db.AdvanceWave(ctx, appID, store.NewUUID(), "1.0.1", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AdvanceWave of an unknown group: %v", err)
	}
}

// TestMigrateWaves upgrades a database written at schema 5 (before waves) on SQLite and
// PostgreSQL: its groups have no waves and no office hours, and then take both.
func TestMigrateWaves(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := t.Context()
			db := upgraded(t, backend, 5, []stmt{
				{`INSERT INTO apps (id, name, trust, created) VALUES ($1, 'twinslot', '', 1)`, []any{appID}},
				{`INSERT INTO channels (app_id, name, external_url) VALUES ($1, 'stable', '')`, []any{appID}},
				{`INSERT INTO update_groups (id, app_id, name, channel, enabled, max_updates, period_ms, timeout_ms, created, updated)
VALUES ('7d6cbd21-57dc-4f32-b7fe-857d7e6e600c', $1, 'stable', 'stable', TRUE, 0, 3600000, 3600000, 1, 1)`, []any{appID}},
			}, 6, "waves and office hours")
			g := groupByName(t, db, "stable")
			if g.Policy.Waves != "" || g.Policy.OfficeHours != "" {
				t.Fatalf("policy after the upgrade = %+v", g.Policy)
			}
			g, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Waves, g.Policy.OfficeHours = "5%:1h,100%", "09:00-17:00" }, t0)
			if err != nil || g.Policy.Waves != "5%:1h,100%" || g.Policy.OfficeHours != "09:00-17:00" {
				t.Fatalf("set waves after the upgrade = %+v, %v", g.Policy, err)
			}
		})
	}
}
