package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Gate is the promotion gate of a channel: what a version must have shown on the channel it
// is promoted from before PromoteGated points this channel at it. Checks are against the source
// channel's groups: how long the source has carried the version (its newest board's pointing),
// how many distinct hosts committed it (reported event 3/1 or 3/2 running it after the reboot,
// coming from another version, completing their grant of it), and how many distinct hosts
// reported it failed (3/0) or rolled back (3/0 with error code 44).
type Gate struct {
	AppID   string
	Channel string // the channel promoted into
	// MinSoak is how long the source channel must have carried the version.
	MinSoak time.Duration
	// MinCommitted is how many hosts of the source channel's groups must run it.
	MinCommitted int64
	// MaxFailures and MaxRollbacks are how many such hosts may have failed it or rolled it back;
	// -1 = any number.
	MaxFailures  int64
	MaxRollbacks int64
	// Auto lets the server promote by itself, from the channel before this one (alpha before
	// beta before stable), each version that passes the gate (see AutoPromote).
	Auto    bool
	Updated time.Time
}

// Gate check names.
const (
	CheckMinSoak      = "min_soak"
	CheckMinCommitted = "min_committed"
	CheckMaxFailures  = "max_failures"
	CheckMaxRollbacks = "max_rollbacks"
)

// GateCheck is one check of a gate: what it wants, what the version has, and whether that
// passes. Soak times are in seconds, the others count hosts.
type GateCheck struct {
	Name   string
	Wanted int64
	Has    int64
	Passed bool
}

// Unit is "seconds" for the soak check and "hosts" for the others.
func (c GateCheck) Unit() string {
	if c.Name == CheckMinSoak {
		return "seconds"
	}
	return "hosts"
}

// String tells an operator the check's result, and by how much a failing one misses.
func (c GateCheck) String() string {
	verdict := "passed"
	secs := func(n int64) string { return (time.Duration(n) * time.Second).String() }
	switch c.Name {
	case CheckMinSoak:
		if !c.Passed {
			verdict = secs(c.Wanted-c.Has) + " to go"
		}
		return fmt.Sprintf("soak: has %s of %s (%s)", secs(c.Has), secs(c.Wanted), verdict)
	case CheckMinCommitted:
		if !c.Passed {
			verdict = fmt.Sprintf("%d more needed", c.Wanted-c.Has)
		}
		return fmt.Sprintf("committed hosts: has %d of %d (%s)", c.Has, c.Wanted, verdict)
	default:
		what := strings.TrimPrefix(c.Name, "max_")
		if !c.Passed {
			verdict = fmt.Sprintf("%d over", c.Has-c.Wanted)
		}
		return fmt.Sprintf("%s: has %d host(s), at most %d allowed (%s)", what, c.Has, c.Wanted, verdict)
	}
}

// Passed reports whether every check passed.
func Passed(checks []GateCheck) bool {
	for _, c := range checks {
		if !c.Passed {
			return false
		}
	}
	return true
}

// GateError is a promotion the gate of its target channel refused. Nothing changed.
type GateError struct {
	Version, From, To string
	Checks            []GateCheck
}

func (e *GateError) Error() string {
	var failed []string
	for _, c := range e.Checks {
		if !c.Passed {
			failed = append(failed, c.String())
		}
	}
	return fmt.Sprintf("promote %s from %s to %s: the %s gate does not pass on %s: %s; wait, or force the promotion with a reason",
		e.Version, e.From, e.To, e.To, e.From, strings.Join(failed, "; "))
}

// IsGateError returns the *GateError in err's chain.
func IsGateError(err error) (*GateError, bool) {
	var ge *GateError
	return ge, errors.As(err, &ge)
}

func checkGateValues(g Gate) error {
	switch {
	case !IsChannel(g.Channel):
		return invalidf("unknown channel %q (channels: %s)", g.Channel, strings.Join(Channels, ", "))
	case g.MinSoak < 0 || g.MinSoak > 366*24*time.Hour:
		return invalidf("min soak %s: want 0 to 366 days", g.MinSoak)
	case g.MinCommitted < 0:
		return invalidf("min committed %d: want 0 or more hosts", g.MinCommitted)
	case g.MaxFailures < -1 || g.MaxRollbacks < -1:
		return invalidf("max failures %d / max rollbacks %d: want a number of hosts, or -1 for any", g.MaxFailures, g.MaxRollbacks)
	case g.Auto && SourceChannel(g.Channel) == "":
		return invalidf("channel %s comes first: nothing to promote into it automatically", g.Channel)
	}
	return nil
}

// SetGate sets (replaces) the promotion gate of a channel.
func (db *DB) SetGate(ctx context.Context, g Gate, now time.Time) (Gate, error) {
	if err := checkGateValues(g); err != nil {
		return Gate{}, err
	}
	g.Updated = fromMS(ms(now))
	err := db.tx(ctx, "set promotion gate", func(tx *sql.Tx) error {
		if _, err := appExists(ctx, tx, g.AppID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM channel_gates WHERE app_id = $1 AND channel = $2`, g.AppID, g.Channel); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO channel_gates (app_id, channel, min_soak_ms, min_committed, max_failures, max_rollbacks, auto_promote, updated)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, g.AppID, g.Channel, g.MinSoak.Milliseconds(), g.MinCommitted, g.MaxFailures, g.MaxRollbacks, g.Auto, ms(now))
		return err
	})
	return g, err
}

// DeleteGate removes the promotion gate of a channel: promotions into it are no longer checked.
func (db *DB) DeleteGate(ctx context.Context, appID, channel string) error {
	return db.tx(ctx, "delete promotion gate", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM channel_gates WHERE app_id = $1 AND channel = $2`, appID, channel)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("promotion gate of channel %s of app %s: %w", channel, appID, ErrNotFound)
		}
		return nil
	})
}

const gateCols = `app_id, channel, min_soak_ms, min_committed, max_failures, max_rollbacks, auto_promote, updated`

func scanGate(s interface{ Scan(...any) error }) (Gate, error) {
	var g Gate
	var soak, updated int64
	err := s.Scan(&g.AppID, &g.Channel, &soak, &g.MinCommitted, &g.MaxFailures, &g.MaxRollbacks, &g.Auto, &updated)
	g.MinSoak, g.Updated = time.Duration(soak)*time.Millisecond, fromMS(updated)
	return g, err
}

// SourceChannel is the channel before channel in promotion order ("" for the first).
func SourceChannel(channel string) string {
	for i, c := range Channels {
		if c == channel && i > 0 {
			return Channels[i-1]
		}
	}
	return ""
}

// AutoGates lists the gates of every app that promote automatically.
func (db *DB) AutoGates(ctx context.Context) ([]Gate, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+gateCols+` FROM channel_gates WHERE auto_promote = TRUE ORDER BY app_id, channel`)
	if err != nil {
		return nil, fmt.Errorf("store: list automatic gates: %w", err)
	}
	return collect(rows, "list automatic gates", scanGate)
}

// AutoPromote promotes version from channel SourceChannel(to) into to when to's gate is
// automatic and passes, and to does not carry version yet on every board from carries it for.
// It returns the packages promoted (none when nothing was to do or the gate does not pass) and
// the gate's checks. The gate row is locked for the transaction, so replicas promote once.
func (db *DB) AutoPromote(ctx context.Context, appID, version, to string, now time.Time) ([]Package, []GateCheck, error) {
	from := SourceChannel(to)
	if from == "" {
		return nil, nil, invalidf("channel %q has no channel before it", to)
	}
	var out []Package
	var checks []GateCheck
	err := db.tx(ctx, "automatic promotion", func(tx *sql.Tx) error {
		g, err := scanGate(tx.QueryRowContext(ctx, `SELECT `+gateCols+` FROM channel_gates WHERE app_id = $1 AND channel = $2`+db.d.forUpdate, appID, to))
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !g.Auto) {
			return nil
		}
		if err != nil {
			return err
		}
		chs, err := channels(ctx, tx, appID)
		if err != nil {
			return err
		}
		src, dst := channelNamed(chs, from), channelNamed(chs, to)
		pending := false
		for b, p := range src.Packages {
			if p.Version == version && dst.Packages[b].ID != p.ID {
				pending = true
			}
		}
		if !pending {
			return nil
		}
		if checks, err = checkGate(ctx, tx, appID, version, from, to, now); err != nil {
			return err
		}
		if !Passed(checks) {
			return nil
		}
		out, err = promoteTx(ctx, tx, appID, version, from, to, now)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return out, checks, nil
}

func channelNamed(chs []Channel, name string) Channel {
	for _, c := range chs {
		if c.Name == name {
			return c
		}
	}
	return Channel{Name: name}
}

// Gates lists an app's promotion gates by channel.
func (db *DB) Gates(ctx context.Context, appID string) ([]Gate, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+gateCols+` FROM channel_gates WHERE app_id = $1 ORDER BY channel`, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list promotion gates: %w", err)
	}
	return collect(rows, "list promotion gates", scanGate)
}

// CheckGate evaluates, without changing anything, the gate of channel to for promoting version
// from channel from. It returns no checks when to has no gate.
func (db *DB) CheckGate(ctx context.Context, appID, version, from, to string, now time.Time) ([]GateCheck, error) {
	checks, err := checkGate(ctx, db.r, appID, version, from, to, now)
	if err != nil {
		return nil, fmt.Errorf("store: check promotion gate: %w", err)
	}
	return checks, nil
}

// soakSinceSQL is when channel $2 started carrying version $3 on its board that did so last
// (the current, non-withdrawn history entry per board).
const soakSinceSQL = `SELECT COALESCE(max(h.at), 0) FROM channel_history h JOIN packages p ON p.id = h.package_id
WHERE h.app_id = $1 AND h.channel = $2 AND p.version = $3 AND p.withdrawn = FALSE AND h.id = (
	SELECT max(h2.id) FROM channel_history h2 JOIN packages p2 ON p2.id = h2.package_id
	WHERE h2.app_id = h.app_id AND h2.channel = h.channel AND h2.board = h.board AND p2.withdrawn = FALSE)`

// committedSQL counts the hosts of channel $2's groups that report running version $3 after
// an update from another version (event 3/1 or 3/2 with a previous version) that completed their
// grant of it (target version $3; a request the server did not trust records none).
const committedSQL = `SELECT count(DISTINCT e.machine_id) FROM events e JOIN update_groups g ON g.id = e.group_id
WHERE e.app_id = $1 AND g.app_id = $1 AND g.channel = $2 AND e.type = 3 AND e.result IN (1, 2) AND e.version = $3
AND e.previous_version NOT IN ('', '0.0.0.0') AND e.previous_version <> $3 AND e.target_version = $3`

// gateFailuresSQL counts the hosts of channel $2's groups that failed version $3, and those
// that rolled it back.
var gateFailuresSQL = fmt.Sprintf(`SELECT
	count(DISTINCT CASE WHEN (e.error_code & %[1]d) <> %[2]d THEN e.machine_id END),
	count(DISTINCT CASE WHEN (e.error_code & %[1]d) = %[2]d THEN e.machine_id END)
FROM events e JOIN update_groups g ON g.id = e.group_id
WHERE e.app_id = $1 AND g.app_id = $1 AND g.channel = $2 AND e.type = 3 AND e.result = 0 AND e.target_version = $3`, errorCodeMask, RollbackCode)

func checkGate(ctx context.Context, q querier, appID, version, from, to string, now time.Time) ([]GateCheck, error) {
	g, err := scanGate(q.QueryRowContext(ctx, `SELECT `+gateCols+` FROM channel_gates WHERE app_id = $1 AND channel = $2`, appID, to))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var since, committed, failed, rolledBack int64
	if err := q.QueryRowContext(ctx, soakSinceSQL, appID, from, version).Scan(&since); err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}
	if err := q.QueryRowContext(ctx, committedSQL, appID, from, version).Scan(&committed); err != nil {
		return nil, fmt.Errorf("committed hosts: %w", err)
	}
	if err := q.QueryRowContext(ctx, gateFailuresSQL, appID, from, version).Scan(&failed, &rolledBack); err != nil {
		return nil, fmt.Errorf("failures: %w", err)
	}
	var soaked int64
	if since > 0 {
		soaked = max(0, now.Sub(fromMS(since)).Milliseconds()/1000)
	}
	wantSoak := int64(g.MinSoak / time.Second)
	checks := []GateCheck{
		{Name: CheckMinSoak, Wanted: wantSoak, Has: soaked, Passed: soaked >= wantSoak},
		{Name: CheckMinCommitted, Wanted: g.MinCommitted, Has: committed, Passed: committed >= g.MinCommitted},
	}
	if g.MaxFailures >= 0 {
		checks = append(checks, GateCheck{Name: CheckMaxFailures, Wanted: g.MaxFailures, Has: failed, Passed: failed <= g.MaxFailures})
	}
	if g.MaxRollbacks >= 0 {
		checks = append(checks, GateCheck{Name: CheckMaxRollbacks, Wanted: g.MaxRollbacks, Has: rolledBack, Passed: rolledBack <= g.MaxRollbacks})
	}
	return checks, nil
}
