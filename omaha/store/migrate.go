package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// migration is one schema step. SQL holds statements separated by ";\n"; {{autoid}} is replaced
// by the dialect's auto-increment primary key column, {{clustered}} by what makes a table
// stored in its primary key order (SQLite WITHOUT ROWID: one B-tree instead of two).
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are applied in order and never edited once released: add a new one instead.
var migrations = []migration{
	{1, "initial schema", `
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('catalog', 1);
CREATE TABLE apps (
	id      TEXT PRIMARY KEY,
	name    TEXT NOT NULL,
	trust   TEXT NOT NULL,
	created BIGINT NOT NULL
);
CREATE TABLE packages (
	id               {{autoid}},
	app_id           TEXT NOT NULL REFERENCES apps (id),
	version          TEXT NOT NULL,
	board            TEXT NOT NULL,
	security_version BIGINT NOT NULL,
	file_name        TEXT NOT NULL,
	size             BIGINT NOT NULL,
	sha256           TEXT NOT NULL,
	sha1             TEXT NOT NULL,
	path             TEXT NOT NULL,
	url              TEXT NOT NULL,
	withdrawn        BOOLEAN NOT NULL DEFAULT FALSE,
	created          BIGINT NOT NULL,
	UNIQUE (app_id, board, version)
);
CREATE INDEX packages_sha256 ON packages (sha256);
CREATE TABLE channels (
	app_id       TEXT NOT NULL REFERENCES apps (id),
	name         TEXT NOT NULL,
	external_url TEXT NOT NULL,
	PRIMARY KEY (app_id, name)
);
CREATE TABLE channel_history (
	id         {{autoid}},
	app_id     TEXT NOT NULL,
	channel    TEXT NOT NULL,
	board      TEXT NOT NULL,
	package_id BIGINT NOT NULL REFERENCES packages (id),
	at         BIGINT NOT NULL,
	FOREIGN KEY (app_id, channel) REFERENCES channels (app_id, name)
);
CREATE INDEX channel_history_current ON channel_history (app_id, channel, board, id);
CREATE TABLE update_groups (
	id          TEXT PRIMARY KEY,
	app_id      TEXT NOT NULL REFERENCES apps (id),
	name        TEXT NOT NULL,
	channel     TEXT NOT NULL,
	enabled     BOOLEAN NOT NULL,
	max_updates BIGINT NOT NULL,
	period_ms   BIGINT NOT NULL,
	timeout_ms  BIGINT NOT NULL,
	created     BIGINT NOT NULL,
	updated     BIGINT NOT NULL,
	UNIQUE (app_id, name),
	FOREIGN KEY (app_id, channel) REFERENCES channels (app_id, name)
);
CREATE TABLE instances (
	app_id           TEXT NOT NULL,
	machine_id       TEXT NOT NULL,
	alias            TEXT NOT NULL,
	group_id         TEXT NOT NULL,
	track            TEXT NOT NULL,
	version          TEXT NOT NULL,
	board            TEXT NOT NULL,
	oem              TEXT NOT NULL,
	boot_id          TEXT NOT NULL,
	state            TEXT NOT NULL,
	last_error       BIGINT NOT NULL,
	first_seen       BIGINT NOT NULL,
	last_check       BIGINT NOT NULL,
	granted_version  TEXT NOT NULL,
	granted_at       BIGINT NOT NULL,
	installed_at     BIGINT NOT NULL,
	failed_at        BIGINT NOT NULL,
	rollback_version TEXT NOT NULL,
	PRIMARY KEY (app_id, machine_id)
){{clustered}};
CREATE INDEX instances_grants ON instances (group_id, granted_at);
CREATE TABLE events (
	id               {{autoid}},
	app_id           TEXT NOT NULL,
	machine_id       TEXT NOT NULL,
	group_id         TEXT NOT NULL,
	type             INTEGER NOT NULL,
	result           INTEGER NOT NULL,
	error_code       BIGINT NOT NULL,
	version          TEXT NOT NULL,
	previous_version TEXT NOT NULL,
	target_version   TEXT NOT NULL,
	at               BIGINT NOT NULL
);
CREATE INDEX events_machine ON events (app_id, machine_id, id);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_failures ON events (group_id, target_version) WHERE result = 0;
CREATE TABLE tokens (
	id      TEXT PRIMARY KEY,
	hash    TEXT NOT NULL UNIQUE,
	role    TEXT NOT NULL,
	name    TEXT NOT NULL,
	created BIGINT NOT NULL
)`},
	{2, "halt on failures", `
ALTER TABLE update_groups ADD COLUMN halt_on_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE update_groups ADD COLUMN halted_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE update_groups ADD COLUMN halted_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE update_groups ADD COLUMN failures_since BIGINT NOT NULL DEFAULT 0`},
	{3, "flatcar packages", `
ALTER TABLE packages ADD COLUMN format TEXT NOT NULL DEFAULT 'twinslot';
CREATE TABLE package_files (
	package_id BIGINT NOT NULL REFERENCES packages (id),
	position   INTEGER NOT NULL,
	name       TEXT NOT NULL,
	size       BIGINT NOT NULL,
	sha256     TEXT NOT NULL,
	sha1       TEXT NOT NULL,
	path       TEXT NOT NULL,
	PRIMARY KEY (package_id, name)
);
ALTER TABLE update_groups ADD COLUMN disable_payload_backoff BOOLEAN NOT NULL DEFAULT FALSE`},
	{4, "audit log", `
CREATE TABLE audit (
	id         {{autoid}},
	at         BIGINT NOT NULL,
	token_id   TEXT NOT NULL,
	who        TEXT NOT NULL,
	remote     TEXT NOT NULL,
	action     TEXT NOT NULL,
	target     TEXT NOT NULL,
	detail     TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at, id);
CREATE INDEX audit_target ON audit (target, id)`},
	{5, "promotion gates", `
CREATE TABLE channel_gates (
	app_id        TEXT NOT NULL,
	channel       TEXT NOT NULL,
	min_soak_ms   BIGINT NOT NULL,
	min_committed BIGINT NOT NULL,
	max_failures  BIGINT NOT NULL,
	max_rollbacks BIGINT NOT NULL,
	auto_promote  BOOLEAN NOT NULL,
	updated       BIGINT NOT NULL,
	PRIMARY KEY (app_id, channel),
	FOREIGN KEY (app_id, channel) REFERENCES channels (app_id, name)
)`},
	{6, "waves and office hours", `
ALTER TABLE update_groups ADD COLUMN waves TEXT NOT NULL DEFAULT '';
ALTER TABLE update_groups ADD COLUMN office_hours TEXT NOT NULL DEFAULT '';
CREATE TABLE group_waves (
	group_id TEXT NOT NULL REFERENCES update_groups (id),
	version  TEXT NOT NULL,
	wave     INTEGER NOT NULL,
	opened   BIGINT NOT NULL,
	PRIMARY KEY (group_id, version, wave)
)`},
	// Host enrollment and grant expiry.
	{7, "host enrollment", `
CREATE TABLE enroll_tokens (
	id       TEXT PRIMARY KEY,
	hash     TEXT NOT NULL UNIQUE,
	app_id   TEXT NOT NULL REFERENCES apps (id),
	group_id TEXT NOT NULL,
	name     TEXT NOT NULL,
	max_uses BIGINT NOT NULL,
	uses     BIGINT NOT NULL,
	expires  BIGINT NOT NULL,
	revoked  BIGINT NOT NULL,
	created  BIGINT NOT NULL
);
CREATE TABLE host_credentials (
	app_id     TEXT NOT NULL,
	machine_id TEXT NOT NULL,
	hash       TEXT NOT NULL,
	group_id   TEXT NOT NULL,
	token_id   TEXT NOT NULL,
	enrolled   BIGINT NOT NULL,
	PRIMARY KEY (app_id, machine_id)
);
ALTER TABLE update_groups ADD COLUMN require_enrollment BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE update_groups ADD COLUMN anonymous TEXT NOT NULL DEFAULT '';
ALTER TABLE update_groups ADD COLUMN grant_start_timeout_ms BIGINT NOT NULL DEFAULT 0`},
}

// SchemaVersion is the newest migration this binary knows.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// migrate applies the missing migrations up to version upto.
func (db *DB) migrate(ctx context.Context, upto int) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version INTEGER PRIMARY KEY,
	name    TEXT NOT NULL,
	applied BIGINT NOT NULL
)`); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	for _, m := range migrations {
		if m.version > upto {
			break
		}
		err := db.tx(ctx, fmt.Sprintf("migration %d (%s)", m.version, m.name), func(tx *sql.Tx) error {
			if db.d.lockMigr != "" {
				if _, err := tx.ExecContext(ctx, db.d.lockMigr); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			text := strings.NewReplacer("{{autoid}}", db.d.autoID, "{{clustered}}", db.d.clustered).Replace(m.sql)
			for _, stmt := range strings.Split(text, ";\n") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", firstLine(stmt), err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied) VALUES ($1, $2, $3)`,
				m.version, m.name, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return err
		}
	}
	var newest int
	if err := db.w.QueryRowContext(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
		return fmt.Errorf("store: read schema version: %w", err)
	}
	if newest > SchemaVersion() {
		return fmt.Errorf("store: the database has schema version %d but this omahad knows only up to %d: run a newer omahad", newest, SchemaVersion())
	}
	return nil
}

// Migrations returns the applied migrations as version → name.
func (db *DB) Migrations(ctx context.Context) (map[int]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("store: list migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v int
		var n string
		if err := rows.Scan(&v, &n); err != nil {
			return nil, fmt.Errorf("store: list migrations: %w", err)
		}
		out[v] = n
	}
	return out, rows.Err()
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
