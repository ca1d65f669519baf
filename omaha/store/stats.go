package store

import (
	"context"
	"database/sql"
	"fmt"
)

// Count is how many instances of a group run a version in a state.
type Count struct {
	GroupID string
	Version string
	State   State
	N       int64
}

// Counts returns instance counts per group, version and state for one app.
func (db *DB) Counts(ctx context.Context, appID string) ([]Count, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT group_id, version, state, count(*) FROM instances WHERE app_id = $1
GROUP BY group_id, version, state ORDER BY group_id, version, state`, appID)
	if err != nil {
		return nil, fmt.Errorf("store: count instances: %w", err)
	}
	return collect(rows, "count instances", func(s interface{ Scan(...any) error }) (Count, error) {
		var c Count
		var state string
		err := s.Scan(&c.GroupID, &c.Version, &state, &c.N)
		c.State = State(state)
		return c, err
	})
}

// RollbackCode is update_engine's error code for "booted the old version again" (Flatcar).
const RollbackCode = 44

// errorCodeMask strips update_engine's flag bits (28–31) from an error code.
const errorCodeMask = 0x0fffffff

// Failures counts, per group and target version, the distinct hosts that reported a failed
// update (3/0) and those that reported a rollback (3/0 with error code 44, flags ignored).
type Failures struct {
	GroupID       string
	TargetVersion string
	Failed        int64 // hosts with a failure other than a rollback
	RolledBack    int64
}

// FailureCounts returns failure and rollback counts for one app (or every app when appID is "").
// Like the halt rule, it counts only reports about a version the host was offered: a 3/0 from a
// host never granted anything (or not enrolled where a group requires it) has no target version.
func (db *DB) FailureCounts(ctx context.Context, appID string) ([]Failures, error) {
	rows, err := db.r.QueryContext(ctx, fmt.Sprintf(`SELECT group_id, target_version,
	count(DISTINCT CASE WHEN (error_code & %[1]d) <> %[2]d THEN machine_id END),
	count(DISTINCT CASE WHEN (error_code & %[1]d) = %[2]d THEN machine_id END)
FROM events WHERE result = 0 AND type = 3 AND target_version <> '' AND ($1 = '' OR app_id = $1)
GROUP BY group_id, target_version ORDER BY group_id, target_version`, errorCodeMask, RollbackCode), appID)
	if err != nil {
		return nil, fmt.Errorf("store: count failures: %w", err)
	}
	return collect(rows, "count failures", func(s interface{ Scan(...any) error }) (Failures, error) {
		var f Failures
		return f, s.Scan(&f.GroupID, &f.TargetVersion, &f.Failed, &f.RolledBack)
	})
}

// Catalog is everything the update handler looks up on each request, read in one snapshot.
type Catalog struct {
	Version  int64 // CatalogVersion at the time of the snapshot
	Apps     []App
	Channels []Channel // every app's channels with their current packages
	Groups   []Group
	Waves    []WaveState // the open wave of each (group, version) rolled out in waves
}

// Catalog reads the catalog of every app in one read transaction.
func (db *DB) Catalog(ctx context.Context) (*Catalog, error) {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("store: read catalog: %w", err)
	}
	defer tx.Rollback()
	c := &Catalog{}
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'catalog'`).Scan(&c.Version); err != nil {
		return nil, fmt.Errorf("store: read catalog: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+appCols+` FROM apps ORDER BY name, id`)
	if err != nil {
		return nil, fmt.Errorf("store: read catalog: %w", err)
	}
	if c.Apps, err = collect(rows, "read catalog", scanApp); err != nil {
		return nil, err
	}
	if c.Channels, err = channels(ctx, tx, ""); err != nil {
		return nil, fmt.Errorf("store: read catalog: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT `+groupCols+` FROM update_groups ORDER BY app_id, name`)
	if err != nil {
		return nil, fmt.Errorf("store: read catalog: %w", err)
	}
	if c.Groups, err = collect(rows, "read catalog", scanGroup); err != nil {
		return nil, err
	}
	if c.Waves, err = waveStates(ctx, tx, ""); err != nil {
		return nil, err
	}
	return c, nil
}
