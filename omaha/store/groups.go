package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Policy limits.
const (
	MaxPeriod  = 366 * 24 * time.Hour
	MaxUpdates = 1 << 40
)

// Check validates a policy.
func (p Policy) Check() error {
	switch {
	case p.MaxUpdates < 0 || p.MaxUpdates > MaxUpdates:
		return invalidf("max updates %d is out of range 0..%d", p.MaxUpdates, int64(MaxUpdates))
	case p.Period < 0 || p.Period > MaxPeriod:
		return invalidf("period %s is out of range 0..%s", p.Period, MaxPeriod)
	case p.MaxUpdates > 0 && p.Period < time.Second:
		return invalidf("a max-updates cap needs a period of at least 1s")
	case p.UpdateTimeout < 0 || p.UpdateTimeout > MaxPeriod:
		return invalidf("update timeout %s is out of range 0..%s", p.UpdateTimeout, MaxPeriod)
	case p.HaltOnFailures < 0 || p.HaltOnFailures > MaxUpdates:
		return invalidf("halt on failures %d is out of range 0..%d (0 = never halt)", p.HaltOnFailures, int64(MaxUpdates))
	case len(p.HaltedReason) > MaxReasonLen:
		return invalidf("halted reason is longer than %d bytes", MaxReasonLen)
	case p.Anonymous != "" && p.Anonymous != AnonymousNone && p.Anonymous != AnonymousFlatcar:
		return invalidf("anonymous %q: want %q or %q", p.Anonymous, AnonymousNone, AnonymousFlatcar)
	case p.GrantStartTimeout < 0 || p.GrantStartTimeout > MaxPeriod:
		return invalidf("grant start timeout %s is out of range 0..%s", p.GrantStartTimeout, MaxPeriod)
	}
	// Durations are stored in whole milliseconds: a positive one below 1ms would be stored
	// as 0, which for a timeout means none at all.
	for _, d := range []struct {
		what string
		v    time.Duration
	}{{"period", p.Period}, {"update timeout", p.UpdateTimeout}, {"grant start timeout", p.GrantStartTimeout}} {
		if d.v > 0 && d.v < time.Millisecond {
			return invalidf("%s %s is below 1ms: give 0 (none) or at least 1ms", d.what, d.v)
		}
	}
	return checkRollout(p)
}

// MaxReasonLen bounds a group's halted reason.
const MaxReasonLen = 1024

const groupCols = `id, app_id, name, channel, enabled, max_updates, period_ms, timeout_ms, created, updated,
halt_on_failures, halted_reason, halted_at, failures_since, disable_payload_backoff,
waves, office_hours,
require_enrollment, anonymous, grant_start_timeout_ms`

func scanGroup(s interface{ Scan(...any) error }) (Group, error) {
	var g Group
	var period, timeout, created, updated, halted, since, startTimeout int64
	err := s.Scan(&g.ID, &g.AppID, &g.Name, &g.Channel, &g.Policy.Enabled, &g.Policy.MaxUpdates, &period, &timeout, &created, &updated,
		&g.Policy.HaltOnFailures, &g.Policy.HaltedReason, &halted, &since, &g.Policy.DisablePayloadBackoff,
		&g.Policy.Waves, &g.Policy.OfficeHours,
		&g.Policy.RequireEnrollment, &g.Policy.Anonymous, &startTimeout)
	g.Policy.GrantStartTimeout = time.Duration(startTimeout) * time.Millisecond
	g.Policy.Period, g.Policy.UpdateTimeout = time.Duration(period)*time.Millisecond, time.Duration(timeout)*time.Millisecond
	g.Created, g.Updated = fromMS(created), fromMS(updated)
	g.Policy.HaltedAt, g.Policy.FailuresSince = fromMS(halted), fromMS(since)
	return g, err
}

func checkGroup(g Group) error {
	if !IsUUID(g.ID) {
		return invalidf("group id %q is not a lower-case UUID", g.ID)
	}
	if err := checkText("group name", g.Name, MaxNameLen, true); err != nil {
		return err
	}
	if IsUUID(g.Name) {
		return invalidf("group name %q looks like a group id: pick a name", g.Name)
	}
	if !IsChannel(g.Channel) {
		return invalidf("unknown channel %q (channels: alpha, beta, stable)", g.Channel)
	}
	return g.Policy.Check()
}

func insertGroup(ctx context.Context, tx *sql.Tx, g Group, now time.Time) error {
	if err := checkGroup(g); err != nil {
		return err
	}
	normalRollout(&g.Policy)
	res, err := tx.ExecContext(ctx, `INSERT INTO update_groups (`+groupCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14,
$15, $16, $17, $18, $19)
ON CONFLICT DO NOTHING`,
		g.ID, g.AppID, g.Name, g.Channel, g.Policy.Enabled, g.Policy.MaxUpdates,
		g.Policy.Period.Milliseconds(), g.Policy.UpdateTimeout.Milliseconds(), ms(now),
		g.Policy.HaltOnFailures, g.Policy.HaltedReason, ms(g.Policy.HaltedAt), ms(g.Policy.FailuresSince), g.Policy.DisablePayloadBackoff,
		g.Policy.Waves, g.Policy.OfficeHours,
		g.Policy.RequireEnrollment, anonymous(g.Policy.Anonymous), g.Policy.GrantStartTimeout.Milliseconds())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("group %q of app %s: %w", g.Name, g.AppID, ErrExists)
	}
	return nil
}

// CreateGroup creates a group. An empty ID gets a new UUID. Names of channels are reserved for
// the default groups. It returns the group as stored.
func (db *DB) CreateGroup(ctx context.Context, g Group, now time.Time) (Group, error) {
	if g.ID == "" {
		g.ID = NewUUID()
	}
	if IsChannel(g.Name) {
		return Group{}, invalidf("group name %q is reserved for the channel's default group", g.Name)
	}
	err := db.tx(ctx, "create group", func(tx *sql.Tx) error {
		if _, err := appExists(ctx, tx, g.AppID); err != nil {
			return err
		}
		if err := insertGroup(ctx, tx, g, now); err != nil {
			return err
		}
		return bumpCatalog(ctx, tx)
	})
	if err != nil {
		return Group{}, err
	}
	return db.Group(ctx, g.AppID, g.ID)
}

// UpdateGroup changes a group's channel and policy (a default group keeps its channel).
// Re-enabling a paused group clears its halted reason and restarts the count of failures for
// HaltOnFailures at now. It returns the group as stored.
func (db *DB) UpdateGroup(ctx context.Context, appID, id string, change func(*Group), now time.Time) (Group, error) {
	err := db.tx(ctx, "update group", func(tx *sql.Tx) error {
		g, err := scanGroup(tx.QueryRowContext(ctx, `SELECT `+groupCols+` FROM update_groups WHERE app_id = $1 AND id = $2`+db.d.forUpdate, appID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("group %s of app %s: %w", id, appID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		old := g
		change(&g)
		if g.ID != old.ID || g.AppID != old.AppID || g.Name != old.Name {
			return invalidf("a group's id, app and name cannot change")
		}
		if old.Default() && g.Channel != old.Channel {
			return invalidf("the default group %q always follows channel %s", old.Name, old.Channel)
		}
		if g.Policy.Enabled && !old.Policy.Enabled {
			g.Policy.HaltedReason, g.Policy.HaltedAt, g.Policy.FailuresSince = "", time.Time{}, now
		}
		if err := checkGroup(g); err != nil {
			return err
		}
		normalRollout(&g.Policy)
		if _, err := tx.ExecContext(ctx, `UPDATE update_groups SET channel = $1, enabled = $2, max_updates = $3, period_ms = $4, timeout_ms = $5, updated = $6,
halt_on_failures = $7, halted_reason = $8, halted_at = $9, failures_since = $10, disable_payload_backoff = $11,
waves = $13, office_hours = $14, require_enrollment = $15, anonymous = $16, grant_start_timeout_ms = $17
WHERE id = $12`, g.Channel, g.Policy.Enabled, g.Policy.MaxUpdates, g.Policy.Period.Milliseconds(), g.Policy.UpdateTimeout.Milliseconds(), ms(now),
			g.Policy.HaltOnFailures, g.Policy.HaltedReason, ms(g.Policy.HaltedAt), ms(g.Policy.FailuresSince), g.Policy.DisablePayloadBackoff, g.ID,
			g.Policy.Waves, g.Policy.OfficeHours, g.Policy.RequireEnrollment, anonymous(g.Policy.Anonymous), g.Policy.GrantStartTimeout.Milliseconds()); err != nil {
			return err
		}
		return bumpCatalog(ctx, tx)
	})
	if err != nil {
		return Group{}, err
	}
	return db.Group(ctx, appID, id)
}

// Group returns a group by id.
func (db *DB) Group(ctx context.Context, appID, id string) (Group, error) {
	g, err := scanGroup(db.r.QueryRowContext(ctx, `SELECT `+groupCols+` FROM update_groups WHERE app_id = $1 AND id = $2`, appID, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Group{}, fmt.Errorf("group %s of app %s: %w", id, appID, ErrNotFound)
	}
	if err != nil {
		return Group{}, fmt.Errorf("store: read group: %w", err)
	}
	return g, nil
}

// Groups returns the groups of one app, or of every app when appID is "", ordered by app and name.
func (db *DB) Groups(ctx context.Context, appID string) ([]Group, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+groupCols+` FROM update_groups WHERE ($1 = '' OR app_id = $1) ORDER BY app_id, name`, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list groups: %w", err)
	}
	return collect(rows, "list groups", scanGroup)
}

// anonymous is how a Policy.Anonymous value is stored: AnonymousNone as "".
func anonymous(v string) string {
	if v == AnonymousNone {
		return ""
	}
	return v
}
