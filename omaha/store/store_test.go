package store_test

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/twinslot/twinslot/omaha/store"
)

// env is one test's fresh, empty database: db, a way to open it again, and raw SQL access
// for the tests that must reach around the store.
type env struct {
	db     *store.DB
	reopen func() (*store.DB, error)
	raw    *sql.DB
}

// opener makes an env.
type opener func(t *testing.T) env

func TestSQLite(t *testing.T) {
	conformance(t, func(t *testing.T) env {
		path := filepath.Join(t.TempDir(), "omaha.db")
		open := func() (*store.DB, error) { return store.Open(t.Context(), path) }
		db := mustOpen(t, open)
		raw, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		return env{db, open, raw}
	})
}

// TestPostgres runs the same suite on PostgreSQL, each test in its own schema.
func TestPostgres(t *testing.T) {
	dsn := os.Getenv("TWINSLOT_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("TWINSLOT_TEST_POSTGRES is not set: skipping the PostgreSQL store suite (set it to a postgres:// DSN; .ci/run does)")
	}
	admin := openAdmin(t, dsn)
	conformance(t, func(t *testing.T) env {
		var b [6]byte
		rand.Read(b[:])
		schema := "t_" + hex.EncodeToString(b[:])
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) })
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		open := func() (*store.DB, error) { return store.Open(t.Context(), u.String()) }
		db := mustOpen(t, open)
		cfg, err := pgx.ParseConfig(u.String())
		if err != nil {
			t.Fatal(err)
		}
		raw := stdlib.OpenDB(*cfg)
		t.Cleanup(func() { raw.Close() })
		return env{db, open, raw}
	})
}

func openAdmin(t *testing.T, dsn string) *sql.DB {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("TWINSLOT_TEST_POSTGRES: %v", err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatalf("TWINSLOT_TEST_POSTGRES is set but PostgreSQL does not answer: %v", err)
	}
	return db
}

func mustOpen(t *testing.T, open func() (*store.DB, error)) *store.DB {
	t.Helper()
	db, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

const (
	appID  = "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc"
	board  = "amd64-usr"
	trust1 = `{"version":1,"keys":[]}`
)

// conformance is the suite every backend passes.
func conformance(t *testing.T, open opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e env)
	}{
		{"Migrations", testMigrations},
		{"Apps", testApps},
		{"Packages", testPackages},
		{"FlatcarPackages", testFlatcarPackages},
		{"PromoteWithdraw", testPromoteWithdraw},
		{"Groups", testGroups},
		{"Checkins", testCheckins},
		{"Grants", testGrants},
		{"BatchGrants", testBatchGrants},
		{"ConcurrentGrants", testConcurrentGrants},
		{"Tokens", testTokens},
		{"Catalog", testCatalog},
		{"HaltOnFailures", testHaltOnFailures},
		{"Audit", testAudit},
		{"Gates", testGates},
		{"Waves", testWaves},
		{"Enrollment", testEnrollment},
		{"GrantStartTimeout", testGrantStartTimeout},
		{"History", testHistory},
		{"SearchInstances", testSearchInstances},
		{"SearchInstancesNonASCII", testSearchInstancesNonASCII},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

func testMigrations(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	got, err := db.Migrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != store.SchemaVersion() || got[1] != "initial schema" {
		t.Fatalf("migrations = %v, want versions 1..%d", got, store.SchemaVersion())
	}
	createApp(t, db)
	// Opening again applies nothing and keeps the data.
	db2, err := e.reopen()
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if _, err := db2.App(ctx, appID); err != nil {
		t.Fatalf("app after reopen: %v", err)
	}
	db2.Close()
	// A database migrated by a newer omahad is refused.
	if _, err := e.raw.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied) VALUES (999, 'from the future', 0)`); err != nil {
		t.Fatal(err)
	}
	if db3, err := e.reopen(); err == nil || !strings.Contains(err.Error(), "run a newer omahad") {
		if db3 != nil {
			db3.Close()
		}
		t.Fatalf("reopen of a newer schema: %v", err)
	}
}

func createApp(t *testing.T, db *store.DB) {
	t.Helper()
	if err := db.CreateApp(t.Context(), store.App{ID: appID, Name: "twinslot", Trust: []byte(trust1)}, t0); err != nil {
		t.Fatal(err)
	}
}

// unchanged asserts that fn fails with want and that the catalog did not change.
func unchanged(t *testing.T, db *store.DB, want error, fn func() error) {
	t.Helper()
	before, err := db.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(); !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	after, err := db.Catalog(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("catalog changed on a failed write:\nbefore %v\nafter  %v", before, after)
	}
}

func testApps(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	bad := []struct {
		name string
		app  store.App
	}{
		{"braces", store.App{ID: "{" + appID + "}", Name: "x", Trust: []byte(trust1)}},
		{"upper case", store.App{ID: strings.ToUpper(appID), Name: "x", Trust: []byte(trust1)}},
		{"no name", store.App{ID: appID, Trust: []byte(trust1)}},
		{"control char", store.App{ID: appID, Name: "a\nb", Trust: []byte(trust1)}},
		{"huge trust", store.App{ID: appID, Name: "x", Trust: make([]byte, store.MaxTrustLen+1)}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			unchanged(t, db, store.ErrInvalid, func() error { return db.CreateApp(ctx, tc.app, t0) })
		})
	}
	createApp(t, db)
	unchanged(t, db, store.ErrExists, func() error {
		return db.CreateApp(ctx, store.App{ID: appID, Name: "again", Trust: []byte(trust1)}, t0)
	})
	a, err := db.App(ctx, appID)
	if err != nil || a.Name != "twinslot" || string(a.Trust) != trust1 || !a.Created.Equal(t0) {
		t.Fatalf("App = %+v, %v", a, err)
	}
	if _, err := db.App(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown app: %v", err)
	}
	chs, err := db.Channels(ctx, appID)
	if err != nil || len(chs) != 3 || chs[0].Name != "alpha" || chs[1].Name != "beta" || chs[2].Name != "stable" {
		t.Fatalf("Channels = %+v, %v", chs, err)
	}
	gs, err := db.Groups(ctx, appID)
	if err != nil || len(gs) != 3 {
		t.Fatalf("Groups = %+v, %v", gs, err)
	}
	for _, g := range gs {
		if !g.Default() || g.Policy != store.DefaultPolicy {
			t.Errorf("default group %+v", g)
		}
	}
	if err := db.SetTrust(ctx, appID, []byte(`{"version":1,"keys":["k"]}`)); err != nil {
		t.Fatal(err)
	}
	if a, _ := db.App(ctx, appID); string(a.Trust) != `{"version":1,"keys":["k"]}` {
		t.Fatalf("trust not replaced: %s", a.Trust)
	}
	unchanged(t, db, store.ErrNotFound, func() error { return db.SetTrust(ctx, "00000000-0000-4000-8000-000000000000", []byte("{}")) })
	unchanged(t, db, store.ErrInvalid, func() error { return db.SetTrust(ctx, appID, nil) })
	apps, err := db.Apps(ctx)
	if err != nil || len(apps) != 1 {
		t.Fatalf("Apps = %v, %v", apps, err)
	}
}

func pkg(version string, sha byte) store.Package {
	var s [32]byte
	for i := range s {
		s[i] = sha
	}
	return store.Package{AppID: appID, Version: version, Board: board, SecurityVersion: 1, FileName: "update.tsp", Size: 1000,
		SHA256: hex.EncodeToString(s[:]), SHA1: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", Path: hex.EncodeToString(s[:])}
}

func current(t *testing.T, db *store.DB, channel string) string {
	t.Helper()
	chs, err := db.Channels(t.Context(), appID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chs {
		if c.Name == channel {
			return c.Packages[board].Version
		}
	}
	t.Fatalf("no channel %s", channel)
	return ""
}

func testPackages(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	bad := []struct {
		name    string
		mod     func(*store.Package)
		channel string
		want    error
	}{
		{"unknown app", func(p *store.Package) { p.AppID = "00000000-0000-4000-8000-000000000000" }, "", store.ErrNotFound},
		{"unknown channel", func(p *store.Package) {}, "edge", store.ErrInvalid},
		{"no version", func(p *store.Package) { p.Version = "" }, "", store.ErrInvalid},
		{"bad sha256", func(p *store.Package) { p.SHA256 = "xyz" }, "", store.ErrInvalid},
		{"bad sha1", func(p *store.Package) { p.SHA1 = "AAAA" }, "", store.ErrInvalid},
		{"zero size", func(p *store.Package) { p.Size = 0 }, "", store.ErrInvalid},
		{"path and url", func(p *store.Package) { p.URL = "https://cdn.example/u.tsp" }, "", store.ErrInvalid},
		{"bad url", func(p *store.Package) { p.Path, p.URL = "", "ftp://x/y" }, "", store.ErrInvalid},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := pkg("1.0.0", 1)
			tc.mod(&p)
			unchanged(t, db, tc.want, func() error { _, err := db.AddPackage(ctx, p, tc.channel, t0); return err })
		})
	}
	p1, err := db.AddPackage(ctx, pkg("1.0.0", 1), "alpha", t0)
	if err != nil || p1.ID == 0 || p1.Version != "1.0.0" {
		t.Fatalf("AddPackage = %+v, %v", p1, err)
	}
	if v := current(t, db, "alpha"); v != "1.0.0" {
		t.Fatalf("alpha = %q", v)
	}
	// The same file again is idempotent; another file with the same version is refused.
	again, err := db.AddPackage(ctx, pkg("1.0.0", 1), "", t0)
	if err != nil || again.ID != p1.ID {
		t.Fatalf("republish = %+v, %v", again, err)
	}
	unchanged(t, db, store.ErrExists, func() error { _, err := db.AddPackage(ctx, pkg("1.0.0", 2), "alpha", t0); return err })
	ext := pkg("1.0.1", 3)
	ext.Path, ext.URL = "", "https://cdn.example/1.0.1/update.tsp"
	if _, err := db.AddPackage(ctx, ext, "", t0); err != nil {
		t.Fatal(err)
	}
	ps, err := db.Packages(ctx, appID)
	if err != nil || len(ps) != 2 || ps[0].Version != "1.0.1" || ps[0].URL == "" {
		t.Fatalf("Packages = %+v, %v", ps, err)
	}
	bySHA, err := db.PackageBySHA256(ctx, p1.SHA256)
	if err != nil || bySHA.ID != p1.ID {
		t.Fatalf("PackageBySHA256 = %+v, %v", bySHA, err)
	}
	if _, err := db.PackageBySHA256(ctx, strings.Repeat("9", 64)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PackageBySHA256 unknown: %v", err)
	}
	if err := db.SetChannelURL(ctx, appID, "stable", "https://cdn.example/{board}/{version}/"); err != nil {
		t.Fatal(err)
	}
	unchanged(t, db, store.ErrInvalid, func() error { return db.SetChannelURL(ctx, appID, "stable", "not a url") })
	unchanged(t, db, store.ErrNotFound, func() error { return db.SetChannelURL(ctx, appID, "edge", "") })
	chs, _ := db.Channels(ctx, appID)
	if chs[2].ExternalURL != "https://cdn.example/{board}/{version}/" {
		t.Fatalf("stable URL = %q", chs[2].ExternalURL)
	}
}

func testPromoteWithdraw(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	for i, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := db.AddPackage(ctx, pkg(v, byte(i+1)), "alpha", t0); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Promote(ctx, appID, v, "alpha", "beta", t0); err != nil {
			t.Fatal(err)
		}
	}
	unchanged(t, db, store.ErrNotFound, func() error { _, err := db.Promote(ctx, appID, "1.0.0", "alpha", "stable", t0); return err })
	unchanged(t, db, store.ErrInvalid, func() error { _, err := db.Promote(ctx, appID, "1.1.0", "alpha", "edge", t0); return err })
	unchanged(t, db, store.ErrInvalid, func() error { _, err := db.Promote(ctx, appID, "1.1.0", "alpha", "alpha", t0); return err })
	if a, b := current(t, db, "alpha"), current(t, db, "beta"); a != "1.1.0" || b != "1.1.0" {
		t.Fatalf("alpha %s beta %s", a, b)
	}
	ps, err := db.Withdraw(ctx, appID, "1.1.0")
	if err != nil || len(ps) != 1 || !ps[0].Withdrawn {
		t.Fatalf("Withdraw = %+v, %v", ps, err)
	}
	// Every channel that carried the bad build falls back to its previous package.
	if a, b := current(t, db, "alpha"), current(t, db, "beta"); a != "1.0.0" || b != "1.0.0" {
		t.Fatalf("after withdraw: alpha %s beta %s", a, b)
	}
	unchanged(t, db, store.ErrNotFound, func() error { _, err := db.Withdraw(ctx, appID, "1.1.0"); return err })
	unchanged(t, db, store.ErrInvalid, func() error { _, err := db.AddPackage(ctx, pkg("1.1.0", 2), "alpha", t0); return err })
	unchanged(t, db, store.ErrNotFound, func() error { _, err := db.Promote(ctx, appID, "1.1.0", "alpha", "stable", t0); return err })
	if _, err := db.Withdraw(ctx, appID, "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if a := current(t, db, "alpha"); a != "" {
		t.Fatalf("alpha after withdrawing everything = %q", a)
	}
}

func groupByName(t *testing.T, db *store.DB, name string) store.Group {
	t.Helper()
	gs, err := db.Groups(t.Context(), appID)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == name {
			return g
		}
	}
	t.Fatalf("no group %q", name)
	return store.Group{}
}

func testGroups(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	pol := store.Policy{Enabled: true, MaxUpdates: 5, Period: time.Hour, UpdateTimeout: 30 * time.Minute}
	bad := []struct {
		name string
		g    store.Group
		want error
	}{
		{"unknown app", store.Group{AppID: "00000000-0000-4000-8000-000000000000", Name: "x", Channel: "beta", Policy: pol}, store.ErrNotFound},
		{"reserved name", store.Group{AppID: appID, Name: "beta", Channel: "beta", Policy: pol}, store.ErrInvalid},
		{"uuid name", store.Group{AppID: appID, Name: "00000000-0000-4000-8000-000000000000", Channel: "beta", Policy: pol}, store.ErrInvalid},
		{"unknown channel", store.Group{AppID: appID, Name: "x", Channel: "edge", Policy: pol}, store.ErrInvalid},
		{"negative max", store.Group{AppID: appID, Name: "x", Channel: "beta", Policy: store.Policy{MaxUpdates: -1}}, store.ErrInvalid},
		{"cap without period", store.Group{AppID: appID, Name: "x", Channel: "beta", Policy: store.Policy{MaxUpdates: 1}}, store.ErrInvalid},
		{"bad id", store.Group{ID: "nope", AppID: appID, Name: "x", Channel: "beta", Policy: pol}, store.ErrInvalid},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			unchanged(t, db, tc.want, func() error { _, err := db.CreateGroup(ctx, tc.g, t0); return err })
		})
	}
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "canary", Channel: "beta", Policy: pol}, t0)
	if err != nil || !store.IsUUID(g.ID) || g.Policy != pol || g.Default() {
		t.Fatalf("CreateGroup = %+v, %v", g, err)
	}
	unchanged(t, db, store.ErrExists, func() error {
		_, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "canary", Channel: "stable", Policy: pol}, t0)
		return err
	})
	t1 := t0.Add(time.Minute)
	up, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Enabled = false; g.Channel = "stable" }, t1)
	if err != nil || up.Policy.Enabled || up.Channel != "stable" || !up.Updated.Equal(t1) || !up.Created.Equal(t0) {
		t.Fatalf("UpdateGroup = %+v, %v", up, err)
	}
	unchanged(t, db, store.ErrInvalid, func() error {
		_, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Period = -time.Second }, t1)
		return err
	})
	unchanged(t, db, store.ErrInvalid, func() error {
		_, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Name = "renamed" }, t1)
		return err
	})
	def := groupByName(t, db, "stable")
	unchanged(t, db, store.ErrInvalid, func() error {
		_, err := db.UpdateGroup(ctx, appID, def.ID, func(g *store.Group) { g.Channel = "alpha" }, t1)
		return err
	})
	unchanged(t, db, store.ErrNotFound, func() error {
		_, err := db.UpdateGroup(ctx, appID, store.NewUUID(), func(g *store.Group) {}, t1)
		return err
	})
	if _, err := db.UpdateGroup(ctx, appID, def.ID, func(g *store.Group) { g.Policy.MaxUpdates = 10 }, t1); err != nil {
		t.Fatal(err)
	}
}

func machine(i int) string { return fmt.Sprintf("%032x", i+1) }

func testCheckins(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	stable := groupByName(t, db, "stable")
	var ins []store.Instance
	var evs []store.Event
	for i := range 450 { // more than one multi-row statement
		ins = append(ins, store.Instance{AppID: appID, MachineID: machine(i), GroupID: stable.ID, Track: "stable", Version: "1.0.0",
			Board: board, State: store.StateIdle, FirstSeen: t0, LastCheck: t0})
		evs = append(evs, store.Event{AppID: appID, MachineID: machine(i), GroupID: stable.ID, Type: 3, Result: 2, Version: "1.0.0", At: t0})
	}
	evs = append(evs,
		store.Event{AppID: appID, MachineID: machine(0), GroupID: stable.ID, Type: 3, Result: 0, ErrorCode: 44 | 1<<28, Version: "1.0.0", TargetVersion: "1.1.0", At: t0},
		store.Event{AppID: appID, MachineID: machine(0), GroupID: stable.ID, Type: 3, Result: 0, ErrorCode: 44, Version: "1.0.0", TargetVersion: "1.1.0", At: t0},
		store.Event{AppID: appID, MachineID: machine(1), GroupID: stable.ID, Type: 3, Result: 0, ErrorCode: 9, Version: "1.0.0", TargetVersion: "1.1.0", At: t0},
		store.Event{AppID: appID, MachineID: machine(2), GroupID: stable.ID, Type: 999, Result: 77, Version: "1.0.0", At: t0.Add(time.Hour)},
	)
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: ins, Events: evs}); err != nil {
		t.Fatal(err)
	}
	// A later check-in replaces everything but first_seen.
	later := ins[0]
	later.Version, later.State, later.LastCheck, later.FirstSeen, later.Alias = "1.1.0", store.StateComplete, t0.Add(time.Hour), t0.Add(time.Hour), "web-1"
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{later}}); err != nil {
		t.Fatal(err)
	}
	got, err := db.Instance(ctx, appID, machine(0))
	want := later
	want.FirstSeen = t0
	if err != nil || got != want {
		t.Fatalf("Instance = %+v, %v\nwant %+v", got, err, want)
	}
	// A routine check-in changes only the routine columns, even if the row it carries says more.
	routine := got
	routine.Version, routine.State, routine.GroupID, routine.GrantedVersion, routine.LastCheck = "1.2.0", store.StateIdle, "other", "9.9.9", t0.Add(2*time.Hour)
	fresh := store.Instance{AppID: appID, MachineID: machine(5000), GroupID: stable.ID, Version: "1.0.0", State: store.StateIdle, FirstSeen: t0, LastCheck: t0, GrantedVersion: "1.0.1"}
	if _, err := db.WriteCheckins(ctx, store.Batch{Routine: []store.Instance{routine, fresh}}); err != nil {
		t.Fatal(err)
	}
	got, _ = db.Instance(ctx, appID, machine(0))
	want.Version, want.State, want.LastCheck = "1.2.0", store.StateIdle, t0.Add(2*time.Hour)
	if got != want {
		t.Fatalf("after a routine check-in: %+v\nwant %+v", got, want)
	}
	if got, _ := db.Instance(ctx, appID, machine(5000)); got != fresh {
		t.Fatalf("a new instance written as routine: %+v\nwant %+v", got, fresh)
	}
	if _, err := db.Instance(ctx, appID, machine(9999)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown instance: %v", err)
	}
	all, err := db.Instances(ctx, store.InstanceFilter{AppID: appID, GroupID: stable.ID, Limit: 1000})
	if err != nil || len(all) != 451 {
		t.Fatalf("Instances = %d, %v", len(all), err)
	}
	page, err := db.Instances(ctx, store.InstanceFilter{AppID: appID, After: machine(99), Limit: 10})
	if err != nil || len(page) != 10 || page[0].MachineID != machine(100) {
		t.Fatalf("page after %s = %v, %v", machine(99), page, err)
	}
	v12, err := db.Instances(ctx, store.InstanceFilter{AppID: appID, Version: "1.2.0", State: store.StateIdle})
	if err != nil || len(v12) != 1 || v12[0].MachineID != machine(0) {
		t.Fatalf("1.2.0 idle = %v, %v", v12, err)
	}
	counts, err := db.Counts(ctx, appID)
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := []store.Count{{stable.ID, "1.0.0", store.StateIdle, 450}, {stable.ID, "1.2.0", store.StateIdle, 1}}
	if fmt.Sprint(counts) != fmt.Sprint(wantCounts) {
		t.Fatalf("Counts = %v, want %v", counts, wantCounts)
	}
	mev, err := db.Events(ctx, store.EventFilter{AppID: appID, MachineID: machine(0)})
	if err != nil || len(mev) != 3 || mev[0].ErrorCode != 44 || mev[2].Type != 3 || mev[2].Result != 2 {
		t.Fatalf("Events(machine 0) = %+v, %v", mev, err)
	}
	fails, err := db.Events(ctx, store.EventFilter{AppID: appID, Failures: true, Limit: 2})
	if err != nil || len(fails) != 2 || fails[0].Result != 0 {
		t.Fatalf("failures = %+v, %v", fails, err)
	}
	fc, err := db.FailureCounts(ctx, appID)
	want2 := []store.Failures{{GroupID: stable.ID, TargetVersion: "1.1.0", Failed: 1, RolledBack: 1}}
	if err != nil || fmt.Sprint(fc) != fmt.Sprint(want2) {
		t.Fatalf("FailureCounts = %+v, %v; want %+v", fc, err, want2)
	}
	n, err := db.PruneEvents(ctx, t0.Add(time.Minute), 100)
	if err != nil || n != 100 {
		t.Fatalf("PruneEvents = %d, %v", n, err)
	}
	n, err = db.PruneEvents(ctx, t0.Add(time.Minute), 10000)
	if err != nil || n != int64(len(evs)-101) {
		t.Fatalf("PruneEvents rest = %d, %v", n, err)
	}
	left, _ := db.Events(ctx, store.EventFilter{})
	if len(left) != 1 || left[0].Type != 999 {
		t.Fatalf("left after prune: %+v", left)
	}
}

// candidate is host i of a group asking to be granted 1.1.0 at time at.
func candidate(groupID string, i int, at time.Time) store.Instance {
	return store.Instance{AppID: appID, MachineID: machine(i), GroupID: groupID, Track: "rollout", Version: "1.0.0", Board: board,
		State: store.StateGranted, FirstSeen: at, LastCheck: at, GrantedVersion: "1.1.0", GrantedAt: at}
}

func testGrants(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "rollout", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: 2, Period: time.Hour, UpdateTimeout: 10 * time.Minute}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	inst := func(i int, at time.Time) store.Instance { return candidate(g.ID, i, at) }
	grant := func(i int, at time.Time) (bool, string, int64) {
		t.Helper()
		r, err := db.Grant(ctx, inst(i, at))
		if err != nil {
			t.Fatal(err)
		}
		return r.OK, r.Reason, r.Active
	}
	if ok, _, _ := grant(0, t0); !ok {
		t.Fatal("first grant refused")
	}
	if ok, _, _ := grant(1, t0.Add(time.Minute)); !ok {
		t.Fatal("second grant refused")
	}
	// The cap is reached; the asking instance itself never counts against it.
	if ok, reason, active := grant(2, t0.Add(2*time.Minute)); ok || reason != "rate-limited" || active != 2 {
		t.Fatalf("third grant = %v %q %d", ok, reason, active)
	}
	if ok, _, _ := grant(1, t0.Add(2*time.Minute)); !ok {
		t.Fatal("re-grant to a holder refused")
	}
	if _, err := db.Instance(ctx, appID, machine(2)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused grant wrote the instance: %v", err)
	}
	// Host 0 installs (3/1): it keeps its slot for the period.
	done := inst(0, t0)
	done.InstalledAt, done.State = t0.Add(5*time.Minute), store.StateInstalled
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{done}}); err != nil {
		t.Fatal(err)
	}
	// After the timeout host 1 (no 3/1) frees its slot; host 0 (installed) does not.
	at := t0.Add(2*time.Minute + 11*time.Minute)
	if n, err := db.ActiveGrants(ctx, g.ID, g.Policy, at); err != nil || n != 1 {
		t.Fatalf("ActiveGrants after timeout = %d, %v", n, err)
	}
	if ok, _, active := grant(2, at); !ok || active != 1 {
		t.Fatalf("grant after timeout = %v %d", ok, active)
	}
	if ok, _, _ := grant(3, at); ok {
		t.Fatal("grant beyond the cap")
	}
	// After the period everything is free again.
	if n, _ := db.ActiveGrants(ctx, g.ID, g.Policy, t0.Add(3*time.Hour)); n != 0 {
		t.Fatalf("ActiveGrants after the period = %d", n)
	}
	// Paused groups grant nothing.
	if _, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Enabled = false }, at); err != nil {
		t.Fatal(err)
	}
	if ok, reason, _ := grant(4, t0.Add(3*time.Hour)); ok || reason != "paused" {
		t.Fatalf("grant in a paused group = %v %q", ok, reason)
	}
	if _, err := db.Grant(ctx, store.Instance{AppID: appID, MachineID: machine(5), GroupID: g.ID}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("grant without version: %v", err)
	}
	bad := inst(5, at)
	bad.GroupID = store.NewUUID()
	if _, err := db.Grant(ctx, bad); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("grant in unknown group: %v", err)
	}
}

// testBatchGrants checks grants decided in one batch: in order, each seeing the rows and
// grants before it, a host granted again counted once.
func testBatchGrants(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "batch", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: 2, Period: time.Hour, UpdateTimeout: 10 * time.Minute}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	cand := func(i int, at time.Time) store.Instance { return candidate(g.ID, i, at) }
	// Host 0 was granted long ago and has just reported 3/1 in the same batch: it holds a slot.
	old := cand(0, t0)
	if _, err := db.Grant(ctx, old); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(30 * time.Minute)
	old.InstalledAt, old.State = at, store.StateInstalled
	rs, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{old}, Grants: []store.Instance{cand(1, at), cand(2, at), cand(3, at)}})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(rs.Grants)
	if want := "[{true  1} {false rate-limited 2} {false rate-limited 2}]"; got != want {
		t.Fatalf("batch grants = %s, want %s", got, want)
	}
	// Host 4 holds a slot of the period and is granted the channel's next version in the same
	// batch as hosts 5 and 6: its new grant replaces the old one, so host 5 takes the second
	// slot and host 6 none, as in separate batches. Host 7's group has no cap.
	g2, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "regrant", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: 2, Period: time.Hour}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	open, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "open", Channel: "stable", Policy: store.Policy{Enabled: true}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := db.Grant(ctx, candidate(g2.ID, 4, t0)); err != nil || !r.OK {
		t.Fatalf("first grant of host 4 = %+v, %v", r, err)
	}
	again := candidate(g2.ID, 4, at)
	again.GrantedVersion = "1.2.0"
	rs, err = db.WriteCheckins(ctx, store.Batch{Grants: []store.Instance{again, candidate(g2.ID, 5, at), candidate(g2.ID, 6, at), candidate(open.ID, 7, at)}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(rs.Grants), "[{true  0} {true  1} {false rate-limited 2} {true  0}]"; got != want {
		t.Fatalf("batch with a host granted again = %s, want %s", got, want)
	}
	if n, err := db.ActiveGrants(ctx, g2.ID, g2.Policy, at); err != nil || n != 2 {
		t.Fatalf("ActiveGrants after the batch = %d, %v; want 2", n, err)
	}
	for i, want := range map[int]string{4: "1.2.0", 5: "1.1.0", 6: "", 7: "1.1.0"} {
		if in, err := db.Instance(ctx, appID, machine(i)); (want == "") != errors.Is(err, store.ErrNotFound) || in.GrantedVersion != want {
			t.Errorf("host %d after the batch: %+v, %v; want granted %q", i, in, err, want)
		}
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Grants: []store.Instance{{AppID: appID, MachineID: machine(9), GroupID: store.NewUUID(), GrantedVersion: "1", GrantedAt: at}}}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("grant in an unknown group: %v", err)
	}
}

// testConcurrentGrants checks that the cap holds when many requests race.
func testConcurrentGrants(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	const max = 3
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "race", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: max, Period: time.Hour}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for i := range 20 {
		wg.Go(func() {
			r, err := db.Grant(ctx, candidate(g.ID, i, t0))
			if err != nil {
				t.Error(err)
			}
			if r.OK {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if granted != max {
		t.Fatalf("granted %d, want %d", granted, max)
	}
}

func testTokens(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	if _, _, err := db.CreateToken(ctx, "root", "", t0); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad role: %v", err)
	}
	secret, tok, err := db.CreateToken(ctx, store.RoleAdmin, "ci", t0)
	if err != nil {
		t.Fatal(err)
	}
	ro, _, err := db.CreateToken(ctx, store.RoleReadOnly, "dashboard", t0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Authenticate(ctx, secret)
	if err != nil || got != tok {
		t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, tok)
	}
	if got, _ := db.Authenticate(ctx, ro); got.Role != store.RoleReadOnly {
		t.Fatalf("read-only token role %q", got.Role)
	}
	for _, bad := range []string{"", "tst_", secret + "x", strings.Repeat("a", 10000), "Bearer " + secret} {
		if _, err := db.Authenticate(ctx, bad); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Authenticate(%.20q) = %v", bad, err)
		}
	}
	toks, err := db.Tokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("Tokens = %v, %v", toks, err)
	}
	if err := db.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked token still valid: %v", err)
	}
	if err := db.DeleteToken(ctx, tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testCatalog(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	v0, err := db.CatalogVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	createApp(t, db)
	if _, err := db.AddPackage(ctx, pkg("1.0.0", 1), "beta", t0); err != nil {
		t.Fatal(err)
	}
	c, err := db.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version <= v0 || len(c.Apps) != 1 || len(c.Channels) != 3 || len(c.Groups) != 3 || c.Channels[1].Packages[board].Version != "1.0.0" {
		t.Fatalf("Catalog = %+v (v0 %d)", c, v0)
	}
	// Check-ins do not touch the catalog.
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: []store.Instance{{AppID: appID, MachineID: machine(0), State: store.StateIdle}}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.CatalogVersion(ctx); v != c.Version {
		t.Fatalf("check-in bumped the catalog version %d → %d", c.Version, v)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// testHaltOnFailures checks the automatic halt: it pauses a group in the transaction that
// records the N-th distinct failed host for the version the group's channel offers, counts
// hosts (not reports) of that group only, ignores versions no longer offered, refuses grants
// decided after it in the same batch, survives a reopen, and a re-enable clears the reason
// and counts anew.
func testHaltOnFailures(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	for _, v := range []string{"1.0.1", "1.0.2"} {
		if _, err := db.AddPackage(ctx, pkg(v, v[4]), "beta", t0); err != nil {
			t.Fatal(err)
		}
	}
	pol := store.Policy{Enabled: true, HaltOnFailures: 2}
	for _, tc := range []struct {
		name string
		p    store.Policy
	}{
		{"negative", store.Policy{Enabled: true, HaltOnFailures: -1}},
		{"huge", store.Policy{Enabled: true, HaltOnFailures: store.MaxUpdates + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unchanged(t, db, store.ErrInvalid, func() error {
				_, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "x", Channel: "beta", Policy: tc.p}, t0)
				return err
			})
		})
	}
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "canary", Channel: "beta", Policy: pol}, t0)
	if err != nil || g.Policy != pol {
		t.Fatalf("CreateGroup = %+v, %v", g, err)
	}
	unchanged(t, db, store.ErrInvalid, func() error {
		_, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.HaltOnFailures = -1 }, t0)
		return err
	})
	def := groupByName(t, db, "beta")
	fail := func(groupID string, i int, target string, code int64, at time.Time) store.Event {
		return store.Event{AppID: appID, MachineID: machine(i), GroupID: groupID, Type: 3, Result: 0, ErrorCode: code,
			Version: "1.0.0", TargetVersion: target, At: at}
	}
	write := func(b store.Batch) store.BatchResult {
		t.Helper()
		res, err := db.WriteCheckins(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	enabled := func() store.Group {
		t.Helper()
		got, err := db.Group(ctx, appID, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	steps := []struct {
		name   string
		events []store.Event
		halted bool
	}{
		{"old version not offered", []store.Event{fail(g.ID, 0, "1.0.1", 1001, t0), fail(g.ID, 1, "1.0.1", 1001, t0)}, false},
		{"other group", []store.Event{fail(def.ID, 2, "1.0.2", 1001, t0), fail(def.ID, 3, "1.0.2", 1001, t0)}, false},
		{"not a failure", []store.Event{{AppID: appID, MachineID: machine(4), GroupID: g.ID, Type: 3, Result: 1, TargetVersion: "1.0.2", At: t0},
			{AppID: appID, MachineID: machine(5), GroupID: g.ID, Type: 13, Result: 0, TargetVersion: "1.0.2", At: t0}}, false},
		{"first host", []store.Event{fail(g.ID, 6, "1.0.2", 1001, t0)}, false},
		{"same host again (rollback report)", []store.Event{fail(g.ID, 6, "1.0.2", 44, t0.Add(time.Minute))}, false},
	}
	for _, s := range steps {
		if res := write(store.Batch{Events: s.events}); len(res.Halted) != 0 || !enabled().Policy.Enabled {
			t.Fatalf("%s: halted %+v", s.name, res.Halted)
		}
	}
	// The second distinct host halts the group; a grant in the same batch sees the pause.
	at := t0.Add(2 * time.Minute)
	before, _ := db.CatalogVersion(ctx)
	res := write(store.Batch{Events: []store.Event{fail(g.ID, 7, "1.0.2", 1001|1<<28, at)}, Grants: []store.Instance{candidate(g.ID, 8, at)}})
	want := "version 1.0.2: 2 host(s) failed (machine " + machine(7) + ", error 1001 health gate); halt_on_failures=2"
	if len(res.Halted) != 1 || res.Halted[0].ID != g.ID || res.Halted[0].Policy.HaltedReason != want {
		t.Fatalf("halted = %+v, want %q", res.Halted, want)
	}
	if len(res.Grants) != 1 || res.Grants[0].OK || res.Grants[0].Reason != "paused" {
		t.Fatalf("grant in the halting batch = %+v", res.Grants)
	}
	if after, _ := db.CatalogVersion(ctx); after == before {
		t.Fatal("halting did not bump the catalog version")
	}
	db2, err := e.reopen()
	if err != nil {
		t.Fatal(err)
	}
	got, err := db2.Group(ctx, appID, g.ID)
	db2.Close()
	if err != nil || got.Policy.Enabled || got.Policy.HaltedReason != want || !got.Policy.HaltedAt.Equal(at) {
		t.Fatalf("after reopen = %+v, %v", got.Policy, err)
	}
	// A halted group is not halted again; re-enabling clears the reason and counts anew.
	if res := write(store.Batch{Events: []store.Event{fail(g.ID, 9, "1.0.2", 1001, at)}}); len(res.Halted) != 0 {
		t.Fatalf("halted twice: %+v", res.Halted)
	}
	t1 := t0.Add(time.Hour)
	up, err := db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.Enabled = true }, t1)
	if err != nil || !up.Policy.Enabled || up.Policy.HaltedReason != "" || !up.Policy.HaltedAt.IsZero() || !up.Policy.FailuresSince.Equal(t1) {
		t.Fatalf("re-enable = %+v, %v", up.Policy, err)
	}
	if res := write(store.Batch{Events: []store.Event{fail(g.ID, 10, "1.0.2", 1001, t1)}}); len(res.Halted) != 0 {
		t.Fatalf("halted by failures from before the re-enable: %+v", res.Halted)
	}
	if res := write(store.Batch{Events: []store.Event{fail(g.ID, 11, "1.0.2", 9, t1)}}); len(res.Halted) != 1 ||
		!strings.Contains(res.Halted[0].Policy.HaltedReason, "2 host(s) failed (machine "+machine(11)+", error 9 DownloadTransferError)") {
		t.Fatalf("second halt = %+v", res.Halted)
	}
}

func flatcarPkg(version string, sha byte) store.Package {
	p := pkg(version, sha)
	p.Format, p.FileName, p.SecurityVersion = store.FormatFlatcar, "flatcar_production_update.gz", 0
	oem := pkg(version, sha+100)
	p.Extras = []store.File{{Name: "oem-azure.gz", Size: 11, SHA256: oem.SHA256, SHA1: oem.SHA1, Path: oem.Path}}
	return p
}

// testFlatcarPackages: an app without a trust root holds Flatcar packages with extras, stored
// or external; the catalog and the download lookup see the extras; a group asks for
// DisablePayloadBackoff.
func testFlatcarPackages(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	if err := db.CreateApp(ctx, store.App{ID: appID, Name: "flatcar"}, t0); err != nil {
		t.Fatalf("CreateApp without trust: %v", err)
	}
	bad := []struct {
		name string
		mod  func(*store.Package)
	}{
		{"unknown format", func(p *store.Package) { p.Format = "rpm" }},
		{"twinslot with extras", func(p *store.Package) { p.Format = store.FormatTwinslot }},
		{"extra named like the payload", func(p *store.Package) { p.Extras[0].Name = p.FileName }},
		{"extra twice", func(p *store.Package) { p.Extras = append(p.Extras, p.Extras[0]) }},
		{"extra zero size", func(p *store.Package) { p.Extras[0].Size = 0 }},
		{"extra bad sha256", func(p *store.Package) { p.Extras[0].SHA256 = "xyz" }},
		{"extra external, package stored", func(p *store.Package) { p.Extras[0].Path = "" }},
		{"extra stored, package external", func(p *store.Package) { p.Path, p.URL = "", "https://cdn.example/x/flatcar_production_update.gz" }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := flatcarPkg("4152.2.0", 1)
			tc.mod(&p)
			unchanged(t, db, store.ErrInvalid, func() error { _, err := db.AddPackage(ctx, p, "stable", t0); return err })
		})
	}
	want := flatcarPkg("4152.2.0", 1)
	got, err := db.AddPackage(ctx, want, "stable", t0)
	if err != nil || got.Format != store.FormatFlatcar || !reflect.DeepEqual(got.Extras, want.Extras) {
		t.Fatalf("AddPackage = %+v, %v", got, err)
	}
	again, err := db.AddPackage(ctx, want, "stable", t0)
	if err != nil || again.ID != got.ID || len(again.Extras) != 1 {
		t.Fatalf("republish = %+v, %v", again, err)
	}
	ext := flatcarPkg("4152.2.1", 2)
	ext.Path, ext.URL, ext.Extras[0].Path = "", "https://cdn.example/4152.2.1/flatcar_production_update.gz", ""
	if _, err := db.AddPackage(ctx, ext, "beta", t0); err != nil {
		t.Fatal(err)
	}
	c, err := db.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range c.Channels {
		p, ok := ch.Packages[board]
		switch ch.Name {
		case "stable", "beta":
			if !ok || p.Format != store.FormatFlatcar || len(p.Extras) != 1 || p.Extras[0].Name != "oem-azure.gz" {
				t.Errorf("catalog %s = %+v", ch.Name, p)
			}
		}
	}
	ps, err := db.Packages(ctx, appID)
	if err != nil || len(ps) != 2 || len(ps[0].Extras) != 1 || ps[0].Extras[0].Path != "" || ps[1].Extras[0].Path == "" {
		t.Fatalf("Packages = %+v, %v", ps, err)
	}
	for name, wantPath := range map[string]string{"oem-azure.gz": want.Extras[0].Path, want.FileName: want.Path, "other": want.Path} {
		if _, path, err := db.PackageFile(ctx, want.SHA256, name); err != nil || path != wantPath {
			t.Errorf("PackageFile(%s) = %q, %v; want %q", name, path, err, wantPath)
		}
	}
	g, err := db.CreateGroup(ctx, store.Group{AppID: appID, Name: "fast", Channel: "stable",
		Policy: store.Policy{Enabled: true, Period: time.Hour, DisablePayloadBackoff: true}}, t0)
	if err != nil || !g.Policy.DisablePayloadBackoff {
		t.Fatalf("CreateGroup = %+v, %v", g, err)
	}
	g, err = db.UpdateGroup(ctx, appID, g.ID, func(g *store.Group) { g.Policy.DisablePayloadBackoff = false }, t0)
	if err != nil || g.Policy.DisablePayloadBackoff {
		t.Fatalf("UpdateGroup = %+v, %v", g, err)
	}
}
