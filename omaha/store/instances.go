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

// chunkRows are the row counts of the multi-row statements WriteCheckins uses: n rows are
// written as greedy chunks of these sizes, so only a few statements exist, each prepared once.
// The largest stays well below SQLite's 32766 and PostgreSQL's 65535 bound parameters.
var chunkRows = []int{128, 32, 8, 1}

// writeQueries are the statements of the check-in write path, prepared once at Open.
func (db *DB) writeQueries() []string {
	q := []string{activeSQL, `SELECT ` + groupCols + ` FROM update_groups WHERE id = $1` + db.d.forUpdate}
	for _, n := range chunkRows {
		q = append(q,
			`INSERT INTO instances (`+instCols+`) VALUES `+db.values.get(n, instNCols)+upsertInstances,
			`INSERT INTO instances (`+instCols+`) VALUES `+db.values.get(n, instNCols)+upsertRoutine,
			`INSERT INTO events (`+evCols+`) VALUES `+db.values.get(n, evNCols))
	}
	return q
}

func (db *DB) prepareWrites(ctx context.Context) error {
	for _, q := range db.writeQueries() {
		if _, err := db.stmt(ctx, false, q); err != nil {
			return fmt.Errorf("store: prepare %.40s: %w", q, err)
		}
	}
	return nil
}

// insertRows writes n rows of cols columns with prefix + VALUES… + suffix, args(args, i)
// appending row i's values.
func (db *DB) insertRows(ctx context.Context, tx *sql.Tx, n, cols int, prefix, suffix string, args func([]any, int) []any) error {
	buf := make([]any, 0, min(n, chunkRows[0])*cols)
	for i := 0; i < n; {
		size := chunkRows[len(chunkRows)-1]
		for _, c := range chunkRows {
			if n-i >= c {
				size = c
				break
			}
		}
		st, err := db.txStmt(ctx, tx, prefix+db.values.get(size, cols)+suffix)
		if err != nil {
			return err
		}
		buf = buf[:0]
		for j := i; j < i+size; j++ {
			buf = args(buf, j)
		}
		if _, err := st.ExecContext(ctx, buf...); err != nil {
			return err
		}
		i += size
	}
	return nil
}

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

// upsertInstances is the ON CONFLICT clause of a whole row: everything but the key and
// first_seen is replaced.
var upsertInstances = upsert(func(c string) bool { return c != "app_id" && c != "machine_id" && c != "first_seen" })

// routineCols are the columns a routine check-in changes; upsertRoutine replaces only those,
// so the group and grant columns, and the index over them, are not touched.
var routineCols = []string{"alias", "track", "version", "board", "oem", "boot_id", "state", "last_error", "last_check"}

var upsertRoutine = upsert(func(c string) bool { return slices.Contains(routineCols, c) })

func upsert(replace func(col string) bool) string {
	var sets []string
	for _, c := range strings.Split(instCols, ",") {
		if c = strings.TrimSpace(c); replace(c) {
			sets = append(sets, c+" = excluded."+c)
		}
	}
	return " ON CONFLICT (app_id, machine_id) DO UPDATE SET " + strings.Join(sets, ", ")
}

// valuesSQL caches "($1, …, $k), (…)" for n rows of k columns. With positional is set it
// writes plain "?" instead: SQLite resolves every "$N" through a list of parameter names,
// which is quadratic in a statement with thousands of them.
type valuesSQL struct {
	positional bool
	mu         sync.Mutex
	m          map[[2]int]string
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
			if v.positional {
				b.WriteByte('?')
			} else {
				fmt.Fprintf(&b, "$%d", n)
			}
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

// Batch is what WriteCheckins writes in one transaction. An instance appears at most once in
// Instances and Routine together.
type Batch struct {
	// Instances are upserted whole (every column but first_seen).
	Instances []Instance
	// Routine rows differ from the stored row, if there is one, only in routineCols (alias,
	// track, version, board, oem, boot id, state, last error, last check); their upsert leaves
	// the group and grant columns alone. A new instance is inserted whole either way.
	Routine []Instance
	Events  []Event
	// Grants are candidates decided in order after everything above (see Grant).
	Grants []Instance
}

// BatchResult is what WriteCheckins decided.
type BatchResult struct {
	Grants []GrantResult // one per Batch.Grants, in order
	Halted []Group       // groups the batch's failure events paused (Policy.HaltOnFailures), as stored
}

// WriteCheckins writes a batch in one transaction (group commit): it upserts instances,
// appends events, halts the groups whose HaltOnFailures threshold the batch's failure events
// reach (see haltOnFailures), then decides each grant candidate in order, seeing everything
// written before it and the grants decided before it (see Grant).
func (db *DB) WriteCheckins(ctx context.Context, b Batch) (BatchResult, error) {
	if len(b.Instances) == 0 && len(b.Routine) == 0 && len(b.Events) == 0 && len(b.Grants) == 0 {
		return BatchResult{}, nil
	}
	for _, g := range b.Grants {
		if g.GrantedVersion == "" || g.GrantedAt.IsZero() {
			return BatchResult{}, invalidf("grant without a granted version and time")
		}
	}
	var res BatchResult
	err := db.tx(ctx, "write check-ins", func(tx *sql.Tx) error {
		res = BatchResult{}
		for _, part := range []struct {
			rows   []Instance
			upsert string
		}{{b.Instances, upsertInstances}, {b.Routine, upsertRoutine}} {
			if err := db.writeInstances(ctx, tx, part.rows, part.upsert); err != nil {
				return fmt.Errorf("upsert %d instances: %w", len(part.rows), err)
			}
		}
		if err := db.insertRows(ctx, tx, len(b.Events), evNCols, `INSERT INTO events (`+evCols+`) VALUES `, "",
			func(args []any, i int) []any { return evArgs(args, &b.Events[i]) }); err != nil {
			return fmt.Errorf("insert %d events: %w", len(b.Events), err)
		}
		failures := haltCandidates(b.Events)
		if len(b.Grants) == 0 && len(failures) == 0 {
			return nil
		}
		ids := make([]string, 0, len(b.Grants)+len(failures))
		for _, g := range b.Grants {
			ids = append(ids, g.GroupID)
		}
		for _, f := range failures {
			ids = append(ids, f.GroupID)
		}
		groups, err := db.lockGroups(ctx, tx, ids)
		if err != nil {
			return err
		}
		if res.Halted, err = db.haltOnFailures(ctx, tx, groups, failures); err != nil {
			return err
		}
		// Decide in order. A grant in a capped group is written at once, so the next decision
		// counts it as a stored row: one that replaces the host's older row, which may hold a
		// slot of the period itself (a host granted again counts once). The other grants do
		// not change any count and are written in one statement at the end.
		var granted []Instance
		for i := range b.Grants {
			in := &b.Grants[i]
			r, err := db.decideGrant(ctx, tx, groups, in)
			if err != nil {
				return err
			}
			res.Grants = append(res.Grants, r)
			switch {
			case !r.OK:
			case groups[in.GroupID].Policy.MaxUpdates > 0:
				if err := db.writeInstances(ctx, tx, []Instance{*in}, upsertInstances); err != nil {
					return err
				}
			default:
				granted = append(granted, *in)
			}
		}
		return db.writeInstances(ctx, tx, granted, upsertInstances)
	})
	if err != nil {
		return BatchResult{}, err
	}
	return res, nil
}

// lockGroups reads (and on PostgreSQL row-locks, in id order against deadlocks) the groups
// with the given ids; unknown ids are left out.
func (db *DB) lockGroups(ctx context.Context, tx *sql.Tx, ids []string) (map[string]Group, error) {
	slices.Sort(ids)
	groups := map[string]Group{}
	for _, id := range slices.Compact(ids) {
		st, err := db.txStmt(ctx, tx, `SELECT `+groupCols+` FROM update_groups WHERE id = $1`+db.d.forUpdate)
		if err != nil {
			return nil, err
		}
		g, err := scanGroup(st.QueryRowContext(ctx, id))
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

// writeInstances inserts rows into instances, resolving a conflict with upsert.
func (db *DB) writeInstances(ctx context.Context, tx *sql.Tx, rows []Instance, upsert string) error {
	return db.insertRows(ctx, tx, len(rows), instNCols, `INSERT INTO instances (`+instCols+`) VALUES `, upsert,
		func(args []any, i int) []any { return instArgs(args, &rows[i]) })
}

// decideGrant decides one grant candidate against the rows written so far. It writes nothing.
func (db *DB) decideGrant(ctx context.Context, tx *sql.Tx, groups map[string]Group, in *Instance) (GrantResult, error) {
	g, ok := groups[in.GroupID]
	if !ok || g.AppID != in.AppID {
		return GrantResult{}, fmt.Errorf("group %s of app %s: %w", in.GroupID, in.AppID, ErrNotFound)
	}
	var r GrantResult
	if g.Policy.Enabled && g.Policy.MaxUpdates > 0 {
		st, err := db.txStmt(ctx, tx, activeSQL)
		if err != nil {
			return GrantResult{}, err
		}
		if err := st.QueryRowContext(ctx, activeArgs(g.ID, g.Policy, in.GrantedAt, in.AppID, in.MachineID)...).Scan(&r.Active); err != nil {
			return GrantResult{}, err
		}
	}
	r.OK, r.Reason = g.Policy.Allows(r.Active)
	return r, nil
}

// Instance returns one instance.
func (db *DB) Instance(ctx context.Context, appID, machineID string) (Instance, error) {
	st, err := db.stmt(ctx, true, `SELECT `+instCols+` FROM instances WHERE app_id = $1 AND machine_id = $2`)
	if err != nil {
		return Instance{}, fmt.Errorf("store: read instance: %w", err)
	}
	in, err := scanInstance(st.QueryRowContext(ctx, appID, machineID))
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
	// Search matches machine ids and aliases that contain it, ignoring case.
	Search string
	After  string // machine id to continue after (pagination)
	Limit  int    // 0 = DefaultLimit
}

// MaxSearchLen bounds InstanceFilter.Search.
const MaxSearchLen = 128

// likePattern returns a LIKE pattern (escape character '\') matching strings that contain
// the lower-case s.
func likePattern(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(strings.ToLower(s)) + "%"
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
	if len(f.Search) > MaxSearchLen {
		return nil, invalidf("instance search longer than %d bytes", MaxSearchLen)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+instCols+` FROM instances
WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR group_id = $2) AND ($3 = '' OR version = $3) AND ($4 = '' OR state = $4) AND machine_id > $5
	AND ($7 = '' OR `+db.d.lower+`(machine_id) LIKE $8 ESCAPE '\' OR `+db.d.lower+`(alias) LIKE $8 ESCAPE '\')
ORDER BY machine_id, app_id LIMIT $6`, f.AppID, f.GroupID, f.Version, string(f.State), f.After, limit(f.Limit), f.Search, likePattern(f.Search))
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
// cut-off); and, unless the group has no grant start timeout ($7), started (see NotStarted) or
// granted after $8 (the start cut-off). $3/$4 exclude one instance (the one asking).
const activeSQL = `SELECT count(*) FROM instances
WHERE group_id = $1 AND granted_at > $2 AND NOT (app_id = $3 AND machine_id = $4)
AND (installed_at >= granted_at OR failed_at >= granted_at OR $5 OR granted_at > $6)
AND ($7 OR state NOT IN ('granted', 'onhold', 'idle') OR installed_at >= granted_at OR failed_at >= granted_at OR granted_at > $8)`

func activeArgs(groupID string, p Policy, now time.Time, appID, machineID string) []any {
	return []any{groupID, ms(now.Add(-p.Period)), appID, machineID, p.UpdateTimeout == 0, ms(now.Add(-p.UpdateTimeout)),
		p.GrantStartTimeout == 0, ms(now.Add(-p.GrantStartTimeout))}
}

// NotStarted reports whether in holds a grant it has not started to download: what
// Policy.GrantStartTimeout frees. It is still granted, on hold or idle (no 13/1 since), and has
// reported neither installing nor failing since the grant: a host that finished its update and
// was later answered onhold or idle (office hours, waves, a pause) started it, and keeps the
// slot it used. activeSQL decides the same.
func NotStarted(in Instance) bool {
	return (in.State == StateGranted || in.State == StateOnHold || in.State == StateIdle) &&
		in.InstalledAt.Before(in.GrantedAt) && in.FailedAt.Before(in.GrantedAt)
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
	rs, err := db.WriteCheckins(ctx, Batch{Grants: []Instance{in}})
	if err != nil {
		return GrantResult{}, err
	}
	return rs.Grants[0], nil
}

// EachInstance calls fn with every stored instance, in no particular order, up to max of them,
// and reports whether that was all (complete). It reads in one statement (a consistent
// snapshot on both backends); servers use it to fill their instance cache at start.
func (db *DB) EachInstance(ctx context.Context, max int, fn func(Instance)) (complete bool, err error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+instCols+` FROM instances LIMIT $1`, max+1)
	if err != nil {
		return false, fmt.Errorf("store: read instances: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if n == max {
			return false, nil
		}
		in, err := scanInstance(rows)
		if err != nil {
			return false, fmt.Errorf("store: read instances: %w", err)
		}
		fn(in)
		n++
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("store: read instances: %w", err)
	}
	return true, nil
}
