package store_test

import (
	"path/filepath"
	"testing"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/store"
)

// TestMigrateFlatcarPackages upgrades a database written at schema 2 (before Flatcar packages)
// on SQLite and PostgreSQL: its packages become twinslot packages without extras, its groups
// keep update_engine's payload backoff, and it then takes Flatcar packages.
func TestMigrateFlatcarPackages(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			ctx := t.Context()
			p := pkg("1.0.0", 1)
			db := upgraded(t, backend, 2, []stmt{
				{`INSERT INTO apps (id, name, trust, created) VALUES ($1, 'twinslot', $2, 1)`, []any{appID, trust1}},
				{`INSERT INTO channels (app_id, name, external_url) VALUES ($1, 'stable', '')`, []any{appID}},
				{`INSERT INTO packages (app_id, version, board, security_version, file_name, size, sha256, sha1, path, url, withdrawn, created)
VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, '', FALSE, 1)`, []any{appID, p.Version, p.Board, p.FileName, p.Size, p.SHA256, p.SHA1, p.Path}},
				{`INSERT INTO channel_history (app_id, channel, board, package_id, at) VALUES ($1, 'stable', $2, 1, 1)`, []any{appID, p.Board}},
				{`INSERT INTO update_groups (id, app_id, name, channel, enabled, max_updates, period_ms, timeout_ms, created, updated)
VALUES ('7d6cbd21-57dc-4f32-b7fe-857d7e6e600c', $1, 'stable', 'stable', TRUE, 0, 3600000, 3600000, 1, 1)`, []any{appID}},
			}, 3, "flatcar packages")
			ps, err := db.Packages(ctx, appID)
			if err != nil || len(ps) != 1 || ps[0].Format != store.FormatTwinslot || ps[0].Extras != nil {
				t.Fatalf("packages after the upgrade = %+v, %v", ps, err)
			}
			gs, err := db.Groups(ctx, appID)
			if err != nil || len(gs) != 1 || gs[0].Policy.DisablePayloadBackoff {
				t.Fatalf("groups after the upgrade = %+v, %v", gs, err)
			}
			fp := flatcarPkg("4152.2.0", 2)
			if _, err := db.AddPackage(ctx, fp, "stable", t0); err != nil {
				t.Fatal(err)
			}
			c, err := db.Catalog(ctx)
			if err != nil || len(c.Channels) != 1 || c.Channels[0].Packages[board].Format != store.FormatFlatcar {
				t.Fatalf("catalog after the upgrade = %+v, %v", c, err)
			}
		})
	}
}

// stmt is one SQL statement and its arguments.
type stmt struct {
	sql  string
	args []any
}

// upgraded writes rows into a new database at schema version from (SQLite, or PostgreSQL when
// backend is "postgres"), opens it again with every migration applied, checks that migration
// want is recorded as name, and returns it (closed when the test ends).
func upgraded(t *testing.T, backend string, from int, rows []stmt, want int, name string) *store.DB {
	t.Helper()
	ctx := t.Context()
	dsn := filepath.Join(t.TempDir(), "omaha.db")
	if backend == "postgres" {
		dsn = omahatest.PostgresDSN(t)
	}
	old, err := store.OpenAt(ctx, dsn, from)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range rows {
		if err := old.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
	old.Close()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if m, err := db.Migrations(ctx); err != nil || m[want] != name {
		t.Fatalf("migrations = %v, %v", m, err)
	}
	return db
}
