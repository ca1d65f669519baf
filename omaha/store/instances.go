package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Rows per multi-row statement in WriteCheckins: well below SQLite's 32766 and PostgreSQL's
// 65535 bound parameters.
const batchRows = 200

const instCols = `app_id, machine_id, alias, group_id, track, version, board, oem, boot_id, state, last_error,
first_seen, last_check, granted_version, granted_at, installed_at, failed_at, rollback_version`

const instNCols = 18

func instArgs(args []any, in *Instance) []any {
	return append(args, in.AppID, in.MachineID, in.Alias, in.GroupID, in.Track, in.Version, in.Board, in.OEM, in.BootID,
		string(in.State), in.LastError, ms(in.FirstSeen), ms(in.LastCheck), in.GrantedVersion, ms(in.GrantedAt),
		ms(in.InstalledAt), ms(in.FailedAt), in.RollbackVersion)
}

func scanInstance(s interface{ Scan(...any) error }) (Instance, error) {
	var in Instance
	var state string
	var first, last, granted, installed, failed int64
	err := s.Scan(&in.AppID, &in.MachineID, &in.Alias, &in.GroupID, &in.Track, &in.Version, &in.Board, &in.OEM, &in.BootID,
		&state, &in.LastError, &first, &last, &in.GrantedVersion, &granted, &installed, &failed, &in.RollbackVersion)
	in.State = State(state)
	in.FirstSeen, in.LastCheck, in.GrantedAt, in.InstalledAt, in.FailedAt = fromMS(first), fromMS(last), fromMS(granted), fromMS(installed), fromMS(failed)
	return in, err
}

const evCols = `app_id, machine_id, group_id, type, result, error_code, version, previous_version, target_version, at`

const evNCols = 10

func evArgs(args []any, e *Event) []any {
	return append(args, e.AppID, e.MachineID, e.GroupID, e.Type, e.Result, e.ErrorCode, e.Version, e.PreviousVersion, e.TargetVersion, ms(e.At))
}

func scanEvent(s interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var at int64
	err := s.Scan(&e.ID, &e.AppID, &e.MachineID, &e.GroupID, &e.Type, &e.Result, &e.ErrorCode, &e.Version, &e.PreviousVersion, &e.TargetVersion, &at)
	e.At = fromMS(at)
	return e, err
}

// upsertInstances is the ON CONFLICT clause: everything but the key and first_seen is replaced.
var upsertInstances = func() string {
	var sets []string
	for _, c := range strings.Split(instCols, ",") {
		c = strings.TrimSpace(c)
		if c != "app_id" && c != "machine_id" && c != "first_seen" {
			sets = append(sets, c+" = excluded."+c)
		}
	}
	return " ON CONFLICT (app_id, machine_id) DO UPDATE SET " + strings.Join(sets, ", ")
}()

// valuesSQL caches "($1, …, $k), (…)" for n rows of k columns.
type valuesSQL struct {
	mu sync.Mutex
	m  map[[2]int]string
}

func (v *valuesSQL) get(rows, cols int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.m[[2]int{rows, cols}]; ok {
		return s
	}
	var b strings.Builder
	n := 1
	for r := 0; r < rows; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := 0; c < cols; c++ {
			if c > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d", n)
			n++
		}
		b.WriteByte(')')
	}
	if v.m == nil {
		v.m = map[[2]int]string{}
	}
	v.m[[2]int{rows, cols}] = b.String()
	return b.String()
}

// GrantResult is the decision on one grant candidate.
type GrantResult struct {
	OK     bool
	Reason string // when !OK: "paused" or "rate-limited"
	Active int64  // hosts of the group holding a slot, not counting the candidate
}

// WriteCheckins writes a batch in one transaction (group commit): it upserts instances, appends
// events, then decides each grant candidate in order, seeing everything written before it (see
// Grant). An instance must appear at most once in instances. It returns one result per grant.
func (db *DB) WriteCheckins(ctx context.Context, instances []Instance, events []Event, grants []Instance) ([]GrantResult, error) {
	if len(instances) == 0 && len(events) == 0 && len(grants) == 0 {
		return nil, nil
	}
	for _, g := range grants {
		if g.GrantedVersion == "" || g.GrantedAt.IsZero() {
			return nil, invalidf("grant without a granted version and time")
		}
	}
	var results []GrantResult
	err := db.tx(ctx, "write check-ins", func(tx *sql.Tx) error {
		results = results[:0]
		args := make([]any, 0, batchRows*instNCols)
		for len(instances) > 0 {
			n := min(len(instances), batchRows)
			args = args[:0]
			for i := range instances[:n] {
				args = instArgs(args, &instances[i])
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO instances (`+instCols+`) VALUES `+db.values.get(n, instNCols)+upsertInstances, args...); err != nil {
				return fmt.Errorf("upsert %d instances: %w", n, err)
			}
			instances = instances[n:]
		}
		for len(events) > 0 {
			n := min(len(events), batchRows)
			args = args[:0]
			for i := range events[:n] {
				args = evArgs(args, &events[i])
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO events (`+evCols+`) VALUES `+db.values.get(n, evNCols), args...); err != nil {
				return fmt.Errorf("insert %d events: %w", n, err)
			}
			events = events[n:]
		}
		if len(grants) == 0 {
			return nil
		}
		groups, err := db.lockGroups(ctx, tx, grants)
		if err != nil {
			return err
		}
		for i := range grants {
			r, err := db.decideGrant(ctx, tx, groups, &grants[i])
			if err != nil {
				return err
			}
			results = append(results, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// lockGroups reads (and on PostgreSQL row-locks, in id order against deadlocks) the groups of
// the grant candidates.
func (db *DB) lockGroups(ctx context.Context, tx *sql.Tx, grants []Instance) (map[string]Group, error) {
	ids := make([]string, 0, len(grants))
	for _, g := range grants {
		ids = append(ids, g.GroupID)
	}
	slices.Sort(ids)
	groups := map[string]Group{}
	for _, id := range slices.Compact(ids) {
		g, err := scanGroup(tx.QueryRowContext(ctx, `SELECT `+groupCols+` FROM update_groups WHERE id = $1`+db.d.forUpdate, id))
		if errors.Is(err, sql.ErrNoRows) {
			continue // decideGrant reports it
		}
		if err != nil {
			return nil, err
		}
		groups[id] = g
	}
	return groups, nil
}

func (db *DB) decideGrant(ctx context.Context, tx *sql.Tx, groups map[string]Group, in *Instance) (GrantResult, error) {
	g, ok := groups[in.GroupID]
	if !ok || g.AppID != in.AppID {
		return GrantResult{}, fmt.Errorf("group %s of app %s: %w", in.GroupID, in.AppID, ErrNotFound)
	}
	var r GrantResult
	if g.Policy.Enabled && g.Policy.MaxUpdates > 0 {
		if err := tx.QueryRowContext(ctx, activeSQL, activeArgs(g.ID, g.Policy, in.GrantedAt, in.AppID, in.MachineID)...).Scan(&r.Active); err != nil {
			return GrantResult{}, err
		}
	}
	if r.OK, r.Reason = g.Policy.Allows(r.Active); !r.OK {
		return r, nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO instances (`+instCols+`) VALUES `+db.values.get(1, instNCols)+upsertInstances, instArgs(nil, in)...)
	return r, err
}

// Instance returns one instance.
func (db *DB) Instance(ctx context.Context, appID, machineID string) (Instance, error) {
	in, err := scanInstance(db.r.QueryRowContext(ctx, `SELECT `+instCols+` FROM instances WHERE app_id = $1 AND machine_id = $2`, appID, machineID))
	if errors.Is(err, sql.ErrNoRows) {
		return Instance{}, fmt.Errorf("instance %s of app %s: %w", machineID, appID, ErrNotFound)
	}
	if err != nil {
		return Instance{}, fmt.Errorf("store: read instance: %w", err)
	}
	return in, nil
}

// InstanceFilter selects instances. Empty fields match everything.
type InstanceFilter struct {
	AppID   string
	GroupID string
	Version string
	State   State
	After   string // machine id to continue after (pagination)
	Limit   int    // 0 = DefaultLimit
}

// Listing limits.
const (
	DefaultLimit = 1000
	MaxLimit     = 100000
)

func limit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// Instances lists instances ordered by machine id.
func (db *DB) Instances(ctx context.Context, f InstanceFilter) ([]Instance, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+instCols+` FROM instances
WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR group_id = $2) AND ($3 = '' OR version = $3) AND ($4 = '' OR state = $4) AND machine_id > $5
ORDER BY machine_id, app_id LIMIT $6`, f.AppID, f.GroupID, f.Version, string(f.State), f.After, limit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("store: list instances: %w", err)
	}
	return collect(rows, "list instances", scanInstance)
}

// EventFilter selects events. Empty fields match everything.
type EventFilter struct {
	AppID     string
	MachineID string
	GroupID   string
	Failures  bool // only result 0 (errors and rollbacks)
	Limit     int  // 0 = DefaultLimit
}

// Events lists events, newest first.
func (db *DB) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	failures := -1
	if f.Failures {
		failures = 0
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, `+evCols+` FROM events
WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR machine_id = $2) AND ($3 = '' OR group_id = $3) AND ($4 < 0 OR result = $4)
ORDER BY id DESC LIMIT $5`, f.AppID, f.MachineID, f.GroupID, failures, limit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	return collect(rows, "list events", scanEvent)
}

// PruneEvents deletes up to max events older than before and returns how many it deleted.
func (db *DB) PruneEvents(ctx context.Context, before time.Time, max int) (int64, error) {
	var n int64
	err := db.tx(ctx, "prune events", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < $1 ORDER BY id LIMIT $2)`, ms(before), max)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Allows reports whether a policy lets one more host be granted an update when active hosts
// already hold a slot of the current period, and if not, why ("paused" or "rate-limited").
func (p Policy) Allows(active int64) (bool, string) {
	switch {
	case !p.Enabled:
		return false, "paused"
	case p.MaxUpdates > 0 && active >= p.MaxUpdates:
		return false, "rate-limited"
	}
	return true, ""
}

// activeSQL counts hosts of a group holding a slot: granted after $2 (the period's start), and
// either done (installed or failed), or without a timeout ($5), or granted after $6 (the timeout
// cut-off). $3/$4 exclude one instance (the one asking).
const activeSQL = `SELECT count(*) FROM instances
WHERE group_id = $1 AND granted_at > $2 AND NOT (app_id = $3 AND machine_id = $4)
AND (installed_at >= granted_at OR failed_at >= granted_at OR $5 OR granted_at > $6)`

func activeArgs(groupID string, p Policy, now time.Time, appID, machineID string) []any {
	return []any{groupID, ms(now.Add(-p.Period)), appID, machineID, p.UpdateTimeout == 0, ms(now.Add(-p.UpdateTimeout))}
}

// ActiveGrants returns how many hosts of a group hold a slot of its max-updates-per-period at now.
func (db *DB) ActiveGrants(ctx context.Context, groupID string, p Policy, now time.Time) (int64, error) {
	var n int64
	if err := db.r.QueryRowContext(ctx, activeSQL, activeArgs(groupID, p, now, "", "")...).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count grants: %w", err)
	}
	return n, nil
}

// Grant decides, under the group's row lock, whether in may be granted an update under the
// group's current policy (read in the same transaction). The caller has already marked in
// granted (GrantedVersion, GrantedAt = now). If the policy allows, in is written and the result
// is OK; otherwise nothing is written and the result says why. Active is counted only for
// groups with a max-updates cap.
func (db *DB) Grant(ctx context.Context, in Instance) (GrantResult, error) {
	rs, err := db.WriteCheckins(ctx, nil, nil, []Instance{in})
	if err != nil {
		return GrantResult{}, err
	}
	return rs[0], nil
}
