package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

func testGates(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	if _, err := db.AddPackage(ctx, pkg("1.0.0", 1), "stable", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddPackage(ctx, pkg("1.0.1", 2), "beta", t0); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []store.Gate{
		{AppID: appID, Channel: "nightly"},
		{AppID: appID, Channel: "stable", MinSoak: -time.Second},
		{AppID: appID, Channel: "stable", MinCommitted: -1},
		{AppID: appID, Channel: "stable", MaxFailures: -2},
	} {
		if _, err := db.SetGate(ctx, bad, t0); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SetGate(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := db.SetGate(ctx, store.Gate{AppID: "00000000-0000-4000-8000-000000000000", Channel: "stable"}, t0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("gate of an unknown app: %v", err)
	}
	// No gate: nothing to check.
	if checks, err := db.CheckGate(ctx, appID, "1.0.1", "beta", "stable", t0); err != nil || checks != nil {
		t.Fatalf("CheckGate without a gate = %v, %v", checks, err)
	}
	gate := store.Gate{AppID: appID, Channel: "stable", MinSoak: 24 * time.Hour, MinCommitted: 2, MaxFailures: 0, MaxRollbacks: -1}
	if g, err := db.SetGate(ctx, gate, t0); err != nil || g.MinSoak != gate.MinSoak {
		t.Fatalf("SetGate = %+v, %v", g, err)
	}
	if gs, err := db.Gates(ctx, appID); err != nil || len(gs) != 1 || gs[0].MinCommitted != 2 || gs[0].MaxRollbacks != -1 || !gs[0].Updated.Equal(t0) {
		t.Fatalf("Gates = %+v, %v", gs, err)
	}
	beta := groupByName(t, db, "beta")
	stableGroup := groupByName(t, db, "stable")
	ev := func(i int, group string, typ, result int, code int64, version, prev, target string) store.Event {
		return store.Event{AppID: appID, MachineID: machine(i), GroupID: group, Type: typ, Result: result, ErrorCode: code,
			Version: version, PreviousVersion: prev, TargetVersion: target, At: t0}
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Events: []store.Event{
		ev(0, beta.ID, 3, 2, 0, "1.0.1", "1.0.0", "1.0.1"),        // committed after the reboot
		ev(0, beta.ID, 3, 2, 0, "1.0.1", "1.0.0", "1.0.1"),        // the same host again
		ev(1, beta.ID, 3, 1, 0, "1.0.0", "", "1.0.1"),             // installed, not yet rebooted
		ev(2, beta.ID, 3, 2, 0, "1.0.1", "0.0.0.0", ""),           // a fresh install, not an update
		ev(3, stableGroup.ID, 3, 2, 0, "1.0.1", "1.0.0", "1.0.1"), // another channel's host
		ev(4, beta.ID, 3, 0, 1001, "1.0.0", "", "1.0.1"),          // failed
		ev(5, beta.ID, 3, 0, 44, "1.0.0", "", "1.0.1"),            // rolled back
		ev(6, beta.ID, 3, 0, 0x20000000|44, "1.0.0", "", "1.0.1"), // rolled back, flag bit set
		ev(7, beta.ID, 3, 2, 0, "1.0.1", "1.0.0", ""),             // claims it, granted nothing (untrusted)
		ev(8, beta.ID, 3, 2, 0, "1.0.1", "1.0.0", "1.0.0"),        // completed another grant
	}}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(3 * time.Hour)
	checks, err := db.CheckGate(ctx, appID, "1.0.1", "beta", "stable", now)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.GateCheck{
		{Name: store.CheckMinSoak, Wanted: 86400, Has: 3 * 3600},
		{Name: store.CheckMinCommitted, Wanted: 2, Has: 1},
		{Name: store.CheckMaxFailures, Wanted: 0, Has: 1},
	}
	if len(checks) != len(want) {
		t.Fatalf("checks = %+v, want %+v", checks, want)
	}
	for i := range want {
		if checks[i] != want[i] {
			t.Errorf("check %d = %+v, want %+v", i, checks[i], want[i])
		}
	}
	// A gated promotion is refused, says by how much, and changes nothing.
	var ge *store.GateError
	unchanged(t, db, nil, func() error {
		_, err := db.PromoteGated(ctx, appID, "1.0.1", "beta", "stable", now)
		if !errors.As(err, &ge) {
			t.Fatalf("PromoteGated = %v, want a GateError", err)
		}
		return nil
	})
	for _, s := range []string{"soak: has 3h0m0s of 24h0m0s (21h0m0s to go)", "committed hosts: has 1 of 2 (1 more needed)", "failures: has 1 host(s), at most 0 allowed (1 over)"} {
		if !strings.Contains(ge.Error(), s) {
			t.Errorf("gate error %q lacks %q", ge.Error(), s)
		}
	}
	if current(t, db, "stable") != "1.0.0" {
		t.Fatal("a refused promotion changed stable")
	}
	// Loosen the gate: it passes, and the gated promotion goes through.
	gate.MinSoak, gate.MinCommitted, gate.MaxFailures = time.Hour, 1, 1
	if _, err := db.SetGate(ctx, gate, now); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PromoteGated(ctx, appID, "1.0.1", "beta", "stable", now); err != nil {
		t.Fatalf("PromoteGated with a passing gate: %v", err)
	}
	if current(t, db, "stable") != "1.0.1" {
		t.Fatal("stable does not carry 1.0.1")
	}
	// Automatic promotion: alpha's 1.0.2 moves to beta only once beta's automatic gate passes,
	// once.
	if _, err := db.SetGate(ctx, store.Gate{AppID: appID, Channel: "alpha", Auto: true}, now); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("automatic gate on alpha: %v", err)
	}
	if _, err := db.AddPackage(ctx, pkg("1.0.2", 3), "alpha", now); err != nil {
		t.Fatal(err)
	}
	if ps, _, err := db.AutoPromote(ctx, appID, "1.0.2", "beta", now); err != nil || ps != nil {
		t.Fatalf("AutoPromote without a gate = %v, %v", ps, err)
	}
	if _, err := db.SetGate(ctx, store.Gate{AppID: appID, Channel: "beta", MinSoak: time.Hour, Auto: true, MaxFailures: -1, MaxRollbacks: -1}, now); err != nil {
		t.Fatal(err)
	}
	if gs, err := db.AutoGates(ctx); err != nil || len(gs) != 1 || gs[0].Channel != "beta" || !gs[0].Auto {
		t.Fatalf("AutoGates = %+v, %v", gs, err)
	}
	ps, checks, err := db.AutoPromote(ctx, appID, "1.0.2", "beta", now.Add(time.Minute))
	if err != nil || ps != nil || store.Passed(checks) || current(t, db, "beta") != "1.0.1" {
		t.Fatalf("AutoPromote before the soak = %v, %+v, %v", ps, checks, err)
	}
	ps, checks, err = db.AutoPromote(ctx, appID, "1.0.2", "beta", now.Add(time.Hour))
	if err != nil || len(ps) != 1 || !store.Passed(checks) || current(t, db, "beta") != "1.0.2" {
		t.Fatalf("AutoPromote after the soak = %v, %+v, %v", ps, checks, err)
	}
	if ps, _, err := db.AutoPromote(ctx, appID, "1.0.2", "beta", now.Add(2*time.Hour)); err != nil || ps != nil {
		t.Fatalf("AutoPromote again = %v, %v; want nothing to do", ps, err)
	}
	if err := db.DeleteGate(ctx, appID, "stable"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteGate(ctx, appID, "stable"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting a missing gate: %v", err)
	}
}
