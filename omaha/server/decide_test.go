package server

import (
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/store"
)

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.0", "1.0.1", -1},
		{"1.9.0", "1.10.0", -1},
		{"4081.2.0", "4152.2.0", -1},
		{"1.0", "1.0.0", -1},
		{"2", "1.99.99", 1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0-rc.2", "1.0.0-rc.10", -1},
		{"1.0.0-alpha", "1.0.0-beta", -1},
		{"1.0.0-1", "1.0.0-alpha", -1},
		{"1.0.0+build.5", "1.0.0+build.6", 0},
		{"1.0.0+x", "1.0.0", 0},
		{"1.0.0-rc.1+x", "1.0.0", -1},
		{"1.0.a", "1.0.1", 1},
		// Numeric fields of any length (versions are up to 64 characters), leading zeros aside.
		{"18446744073709551616", "1", 1},
		{"1.99999999999999999999", "1.100000000000000000000", -1},
		{"1.0.0-rc.99999999999999999999", "1.0.0-rc.100000000000000000000", -1},
		{"1.0100000000000000000000", "1.100000000000000000000", 0},
		{"1.007", "1.7", 0},
		{"1.100000000000000000000", "1.a", -1},
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

// FuzzCompareVersions checks the order is antisymmetric and reflexive for any strings hosts
// may send (omaha.CheckVersion-valid or not).
func FuzzCompareVersions(f *testing.F) {
	for _, s := range [][2]string{{"4081.2.0", "4152.2.0"}, {"1.0.0-rc.1", "1.0.0"}, {"1.0+x", "1.0-"}, {"", "."}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareVersions(a, a) != 0 {
			t.Fatalf("CompareVersions(%q, itself) != 0", a)
		}
		if x, y := CompareVersions(a, b), CompareVersions(b, a); x != -y {
			t.Fatalf("CompareVersions(%q, %q) = %d but reversed %d", a, b, x, y)
		}
	})
}

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func TestPlan(t *testing.T) {
	pkg := &store.Package{Version: "1.1.0"}
	open := store.Policy{Enabled: true, Period: time.Hour, UpdateTimeout: 10 * time.Minute}
	granted := store.Instance{Version: "1.0.0", State: store.StateGranted, GrantedVersion: "1.1.0", GrantedAt: t0}
	for _, tc := range []struct {
		name string
		in   store.Instance
		pkg  *store.Package
		p    store.Policy
		now  time.Time
		want verdict
	}{
		{"no package", store.Instance{Version: "1.0.0", State: store.StateIdle}, nil, open, t0,
			verdict{reason: reasonNoPackage, state: store.StateIdle}},
		{"up to date", store.Instance{Version: "1.1.0", State: store.StateIdle}, pkg, open, t0,
			verdict{reason: reasonUpToDate, state: store.StateIdle}},
		{"newer than the channel", store.Instance{Version: "1.2.0", State: store.StateIdle}, pkg, open, t0,
			verdict{reason: reasonUpToDate, state: store.StateIdle}},
		{"came up on the granted version", store.Instance{Version: "1.1.0", State: store.StateInstalled, GrantedVersion: "1.1.0"}, pkg, open, t0,
			verdict{reason: reasonUpToDate, state: store.StateComplete}},
		{"complete stays complete", store.Instance{Version: "1.1.0", State: store.StateComplete}, pkg, open, t0,
			verdict{reason: reasonUpToDate, state: store.StateComplete}},
		{"rolled back from it", store.Instance{Version: "1.0.0", State: store.StateRolledBack, RollbackVersion: "1.1.0"}, pkg, open, t0,
			verdict{reason: reasonRolledBack, state: store.StateRolledBack}},
		{"paused", store.Instance{Version: "1.0.0"}, pkg, store.Policy{}, t0,
			verdict{reason: reasonPaused, state: store.StateOnHold}},
		{"paused with a grant", granted, pkg, store.Policy{}, t0,
			verdict{reason: reasonPaused, state: store.StateOnHold}},
		{"new host", store.Instance{Version: "1.0.0"}, pkg, open, t0, verdict{offer: true, grant: true}},
		{"grant within timeout", granted, pkg, open, t0.Add(9 * time.Minute), verdict{offer: true}},
		{"grant timed out", granted, pkg, open, t0.Add(10 * time.Minute), verdict{offer: true, grant: true}},
		{"grant without timeout", granted, pkg, store.Policy{Enabled: true}, t0.Add(100 * time.Hour), verdict{offer: true}},
		{"failed grant is retried", func() store.Instance { in := granted; in.FailedAt = t0.Add(time.Minute); return in }(), pkg, open, t0.Add(time.Hour),
			verdict{offer: true}},
		{"grant of an older version", func() store.Instance { in := granted; in.GrantedVersion = "1.0.5"; return in }(), pkg, open, t0,
			verdict{offer: true, grant: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := plan(tc.in, tc.pkg, tc.p, tc.now); got != tc.want {
				t.Fatalf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestApplyEvent(t *testing.T) {
	base := store.Instance{AppID: "a", MachineID: "m", GroupID: "g", Version: "1.0.0", State: store.StateGranted, GrantedVersion: "1.1.0", GrantedAt: t0}
	now := t0.Add(time.Minute)
	for _, tc := range []struct {
		name       string
		in         store.Instance
		ev         omaha.Event
		wantState  store.State
		check      func(store.Instance) bool
		wantTarget string
	}{
		{"unknown pair", base, omaha.Event{Type: 999, Result: 77}, store.StateGranted, nil, "1.1.0"},
		{"13/1", base, omaha.Event{Type: 13, Result: 1}, store.StateDownloading, nil, "1.1.0"},
		{"14/1", base, omaha.Event{Type: 14, Result: 1}, store.StateDownloaded, nil, "1.1.0"},
		{"3/1", base, omaha.Event{Type: 3, Result: 1}, store.StateInstalled, func(in store.Instance) bool { return in.InstalledAt.Equal(now) }, "1.1.0"},
		{"800/1", base, omaha.Event{Type: 800, Result: 1}, store.StateInstalled, nil, "1.1.0"},
		{"3/0", base, omaha.Event{Type: 3, Result: 0, ErrorCode: 5 | omaha.ErrorCodeFlagTestOmahaURL}, store.StateError,
			func(in store.Instance) bool {
				return in.FailedAt.Equal(now) && in.LastError == int64(5|omaha.ErrorCodeFlagTestOmahaURL)
			}, "1.1.0"},
		{"3/0/44", base, omaha.Event{Type: 3, Result: 0, ErrorCode: 44 | omaha.ErrorCodeFlagTestOmahaURL}, store.StateRolledBack,
			func(in store.Instance) bool { return in.RollbackVersion == "1.1.0" }, "1.1.0"},
		{"3/0 after the update", func() store.Instance { in := base; in.Version, in.State = "1.1.0", store.StateComplete; return in }(),
			omaha.Event{Type: 3, Result: 0, ErrorCode: 2503}, store.StateComplete,
			func(in store.Instance) bool { return in.FailedAt.IsZero() && in.LastError == 2503 }, ""},
		{"3/0 after the update, held for the next", func() store.Instance { in := base; in.Version, in.State = "1.1.0", store.StateOnHold; return in }(),
			omaha.Event{Type: 3, Result: 0, ErrorCode: 2503}, store.StateOnHold, func(in store.Instance) bool { return in.FailedAt.IsZero() }, ""},
		{"3/0 from the new version before a check", func() store.Instance { in := base; in.Version, in.State = "1.1.0", store.StateInstalled; return in }(),
			omaha.Event{Type: 3, Result: 0, ErrorCode: 1001}, store.StateError, func(in store.Instance) bool { return in.FailedAt.Equal(now) }, "1.1.0"},
		{"3/9", base, omaha.Event{Type: 3, Result: 9, ErrorCode: 40}, store.StateGranted, func(in store.Instance) bool { return in.LastError == 40 }, "1.1.0"},
		{"3/2 routine", base, omaha.Event{Type: 3, Result: 2}, store.StateGranted, nil, ""},
		{"3/2 after the update", func() store.Instance { in := base; in.Version = "1.1.0"; return in }(),
			omaha.Event{Type: 3, Result: 2, PreviousVersion: "1.0.0"}, store.StateComplete, nil, "1.1.0"},
		{"3/2 with 0.0.0.0", func() store.Instance { in := base; in.Version = "1.1.0"; return in }(),
			omaha.Event{Type: 3, Result: 2, PreviousVersion: "0.0.0.0"}, store.StateGranted, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			row := applyEvent(&in, &tc.ev, now)
			if in.State != tc.wantState || (tc.check != nil && !tc.check(in)) {
				t.Fatalf("instance after %s: %+v", tc.name, in)
			}
			if row.Type != int(tc.ev.Type) || row.Result != int(tc.ev.Result) || row.ErrorCode != int64(tc.ev.ErrorCode) ||
				row.MachineID != "m" || row.GroupID != "g" || !row.At.Equal(now) || row.TargetVersion != tc.wantTarget {
				t.Fatalf("event row %+v", row)
			}
		})
	}
}
