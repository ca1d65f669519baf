package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

func testEnrollment(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "fleet", Channel: "stable", Policy: store.Policy{Enabled: true, RequireEnrollment: true}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Bad tokens are refused and create nothing.
	for _, bad := range []store.EnrollToken{
		{AppID: appID, MaxUses: -1},
		{AppID: appID, Expires: t0},
		{AppID: appID, Name: "a\nb"},
		{AppID: store.NewUUID()},
		{AppID: appID, GroupID: store.NewUUID()},
	} {
		if _, _, err := db.CreateEnrollToken(ctx, bad, t0); !errors.Is(err, store.ErrInvalid) && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("CreateEnrollToken(%+v) = %v", bad, err)
		}
	}
	if ts, err := db.EnrollTokens(ctx, appID); err != nil || len(ts) != 0 {
		t.Fatalf("tokens after refusals = %+v, %v", ts, err)
	}

	// Two uses, one day.
	secret, tok, err := db.CreateEnrollToken(ctx, store.EnrollToken{AppID: appID, GroupID: g.ID, Name: "rack 4", MaxUses: 2, Expires: t0.Add(24 * time.Hour)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "ts-enroll-") || tok.GroupID != g.ID || tok.Uses != 0 {
		t.Fatalf("token = %q %+v", secret, tok)
	}
	refused := func(token, app, machineID string, at time.Time, why string) {
		t.Helper()
		_, _, err := db.Enroll(ctx, token, app, machineID, at)
		if !errors.Is(err, store.ErrEnrollRefused) || !strings.Contains(err.Error(), why) {
			t.Fatalf("Enroll(%.16s…, %s) = %v, want refused: %s", token, machineID, err, why)
		}
	}
	refused("tst_admin", appID, machine(0), t0, "not an enrollment token")
	refused(secret+"x", appID, machine(0), t0, "unknown enrollment token")
	refused(secret, store.NewUUID(), machine(0), t0, "is for app")
	refused(secret, appID, machine(0), t0.Add(24*time.Hour), "expired")

	cred, c, err := db.Enroll(ctx, secret, appID, machine(0), t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cred, store.CredentialPrefix) || c.Hash != store.HashCredential(cred) || c.GroupID != g.ID || c.TokenID != tok.ID {
		t.Fatalf("credential = %q %+v", cred, c)
	}
	got, err := db.HostCredential(ctx, appID, machine(0))
	if err != nil || got.Hash != c.Hash || got.MachineID != machine(0) || !got.Enrolled.Equal(t0.Add(time.Minute)) {
		t.Fatalf("HostCredential = %+v, %v", got, err)
	}
	if _, err := db.HostCredential(ctx, appID, machine(1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("HostCredential of an unenrolled host = %v", err)
	}
	// A new credential leaves the credentials version alone: servers read it when it is presented.
	if v, err := db.CredentialsVersion(ctx); err != nil || v != 0 {
		t.Fatalf("CredentialsVersion after a first enrollment = %d, %v", v, err)
	}
	// Enrolling again replaces the credential (a reinstalled host), spends a use, and bumps the
	// credentials version: servers that cached the old credential must stop trusting it.
	cred2, _, err := db.Enroll(ctx, secret, "", machine(0), t0.Add(2*time.Minute))
	if err != nil || cred2 == cred {
		t.Fatalf("re-enroll = %q, %v", cred2, err)
	}
	if got, _ := db.HostCredential(ctx, appID, machine(0)); got.Hash != store.HashCredential(cred2) {
		t.Fatal("re-enrolling kept the old credential")
	}
	if v, err := db.CredentialsVersion(ctx); err != nil || v != 1 {
		t.Fatalf("CredentialsVersion after re-enrolling = %d, %v", v, err)
	}
	refused(secret, appID, machine(1), t0.Add(3*time.Minute), "used up (2 of 2 uses)")
	if _, err := db.HostCredential(ctx, appID, machine(1)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused enrollment stored a credential: %v", err)
	}

	// Revoked tokens enroll nobody; enrolled hosts keep their credential.
	secret3, tok3, err := db.CreateEnrollToken(ctx, store.EnrollToken{AppID: appID}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Enroll(ctx, secret3, appID, machine(2), t0); err != nil {
		t.Fatal(err)
	}
	rv, err := db.RevokeEnrollToken(ctx, appID, tok3.ID, t0.Add(time.Hour))
	if err != nil || !rv.Revoked.Equal(t0.Add(time.Hour)) || rv.Uses != 1 {
		t.Fatalf("revoke = %+v, %v", rv, err)
	}
	if rv, _ := db.RevokeEnrollToken(ctx, appID, tok3.ID, t0.Add(2*time.Hour)); !rv.Revoked.Equal(t0.Add(time.Hour)) {
		t.Fatalf("revoking again moved the time: %+v", rv)
	}
	if _, err := db.RevokeEnrollToken(ctx, appID, "nope", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown = %v", err)
	}
	refused(secret3, appID, machine(3), t0.Add(time.Hour), "revoked")
	n := 0
	if err := db.EachHostCredential(ctx, func(c store.HostCredential) { n++ }); err != nil || n != 2 {
		t.Fatalf("EachHostCredential: %d, %v", n, err)
	}
	ts, err := db.EnrollTokens(ctx, appID)
	if err != nil || len(ts) != 2 || ts[0].Uses+ts[1].Uses != 3 {
		t.Fatalf("tokens = %+v, %v", ts, err)
	}

	// Unenrolling deletes the credential and bumps the credentials version.
	if v, err := db.CredentialsVersion(ctx); err != nil || v != 1 {
		t.Fatalf("CredentialsVersion before = %d, %v", v, err)
	}
	if c, err := db.UnenrollHost(ctx, appID, machine(2)); err != nil || c.MachineID != machine(2) {
		t.Fatalf("UnenrollHost = %+v, %v", c, err)
	}
	if _, err := db.HostCredential(ctx, appID, machine(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("credential after unenroll: %v", err)
	}
	if _, err := db.UnenrollHost(ctx, appID, machine(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unenroll twice: %v", err)
	}
	if _, err := db.UnenrollHost(ctx, appID, machine(0)); err != nil {
		t.Fatal(err)
	}
	if v, err := db.CredentialsVersion(ctx); err != nil || v != 3 {
		t.Fatalf("CredentialsVersion after two = %d, %v", v, err)
	}
}

// testGrantStartTimeout: a grant whose host did not report 13/1 within the group's grant start
// timeout frees its slot; one that started keeps it, also once it finished (installed or failed)
// and was answered onhold or idle since.
func testGrantStartTimeout(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "rollout", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: 2, Period: time.Hour, UpdateTimeout: 30 * time.Minute, GrantStartTimeout: 10 * time.Minute}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Policy.GrantStartTimeout != 10*time.Minute || g.Policy.Anonymous != "" {
		t.Fatalf("policy as stored = %+v", g.Policy)
	}
	for i := range 2 {
		if r, err := db.Grant(ctx, candidate(g.ID, i, t0)); err != nil || !r.OK {
			t.Fatalf("grant %d = %+v, %v", i, r, err)
		}
	}
	// Host 0 starts downloading; host 1 only checks in.
	started := candidate(g.ID, 0, t0)
	started.State = store.StateDownloading
	if _, err := db.WriteCheckins(ctx, store.Batch{Routine: []store.Instance{started}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := db.Grant(ctx, candidate(g.ID, 2, t0.Add(9*time.Minute))); r.OK {
		t.Fatal("granted beyond the cap before the start timeout")
	}
	at := t0.Add(10*time.Minute + time.Millisecond)
	if n, err := db.ActiveGrants(ctx, g.ID, g.Policy, at); err != nil || n != 1 {
		t.Fatalf("ActiveGrants after the start timeout = %d, %v; want 1 (the host that started)", n, err)
	}
	if r, err := db.Grant(ctx, candidate(g.ID, 2, at)); err != nil || !r.OK || r.Active != 1 {
		t.Fatalf("grant after the start timeout = %+v, %v", r, err)
	}
	// Host 0 finishes, and is later held (a next version outside office hours, a pause): the
	// state no longer shows it started, what it reported does.
	for _, done := range []struct {
		state             store.State
		installed, failed time.Time
	}{
		{store.StateOnHold, t0.Add(5 * time.Minute), time.Time{}},
		{store.StateIdle, time.Time{}, t0.Add(5 * time.Minute)},
	} {
		in := started
		in.State, in.InstalledAt, in.FailedAt = done.state, done.installed, done.failed
		if _, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{in}}); err != nil {
			t.Fatal(err)
		}
		if n, err := db.ActiveGrants(ctx, g.ID, g.Policy, at); err != nil || n != 2 {
			t.Fatalf("ActiveGrants with host 0 %s, installed %v, failed %v = %d, %v; want 2",
				done.state, done.installed, done.failed, n, err)
		}
		if store.NotStarted(in) {
			t.Fatalf("NotStarted(host 0 %s, installed %v, failed %v)", done.state, done.installed, done.failed)
		}
	}
	if c := candidate(g.ID, 1, t0); !store.NotStarted(c) {
		t.Fatal("NotStarted(a grant never started) = false")
	}
	// Host 1 can be granted again later, taking a slot again.
	if r, _ := db.Grant(ctx, candidate(g.ID, 1, at)); r.OK {
		t.Fatal("the expired host was granted beyond the cap")
	}
	for _, bad := range []store.Policy{{GrantStartTimeout: -1}, {Anonymous: "everyone"}} {
		if _, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy = bad }, at); !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("UpdateGroup(%+v) = %v", bad, err)
		}
	}
	if g, err = db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Anonymous = store.AnonymousFlatcar; g.Policy.RequireEnrollment = true }, at); err != nil ||
		!g.Policy.RequireEnrollment || g.Policy.Anonymous != store.AnonymousFlatcar {
		t.Fatalf("UpdateGroup = %+v, %v", g.Policy, err)
	}
}

// TestMigrateEnrollment upgrades a database at schema 5 on SQLite and PostgreSQL: its groups
// require no enrollment and have no grant start timeout, and it then takes tokens.
func TestMigrateEnrollment(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := t.Context()
			db := upgraded(t, backend, 5, []stmt{
				{`INSERT INTO apps (id, name, trust, created) VALUES ($1, 'twinslot', '{}', 1)`, []any{appID}},
				{`INSERT INTO channels (app_id, name, external_url) VALUES ($1, 'stable', '')`, []any{appID}},
				{`INSERT INTO update_groups (id, app_id, name, channel, enabled, max_updates, period_ms, timeout_ms, created, updated)
VALUES ('7d6cbd21-57dc-4f32-b7fe-857d7e6e600c', $1, 'stable', 'stable', TRUE, 5, 3600000, 3600000, 1, 1)`, []any{appID}},
			}, 7, "host enrollment")
			gs, err := db.Groups(ctx, appID)
			if err != nil || len(gs) != 1 || gs[0].Policy.RequireEnrollment || gs[0].Policy.Anonymous != "" ||
				gs[0].Policy.GrantStartTimeout != 0 || gs[0].Policy.MaxUpdates != 5 {
				t.Fatalf("groups after the upgrade = %+v, %v", gs, err)
			}
			secret, _, err := db.CreateEnrollToken(ctx, store.EnrollToken{AppID: appID, MaxUses: 1}, t0)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := db.Enroll(ctx, secret, appID, machine(0), t0); err != nil {
				t.Fatal(err)
			}
		})
	}
}
