package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/twinslot/twinslot/omaha"
)

// isFailure reports whether e is a host reporting that the update it was granted failed: event
// 3/0 (update complete, error) with any error code, including the rollback report 3/0/44 the
// agent sends with its first check after booting back into the old version.
func isFailure(e *Event) bool {
	return e.Type == int(omaha.EventTypeUpdateComplete) && e.Result == int(omaha.EventResultError) && e.TargetVersion != ""
}

// haltCandidates returns the newest failure event of a batch per (group, target version),
// ordered by group and version.
func haltCandidates(evs []Event) []Event {
	var out []Event
	for i := range evs {
		e := &evs[i]
		if !isFailure(e) {
			continue
		}
		j := slices.IndexFunc(out, func(o Event) bool { return o.GroupID == e.GroupID && o.TargetVersion == e.TargetVersion })
		if j < 0 {
			out = append(out, *e)
		} else if !e.At.Before(out[j].At) {
			out[j] = *e
		}
	}
	slices.SortFunc(out, func(a, b Event) int {
		return cmp.Or(cmp.Compare(a.GroupID, b.GroupID), cmp.Compare(a.TargetVersion, b.TargetVersion))
	})
	return out
}

// offeredSQL counts the current packages (newest non-withdrawn history entry per board) of an
// app's channel that have a given version: > 0 when the channel offers that version.
const offeredSQL = `SELECT count(*) FROM channel_history h JOIN packages p ON p.id = h.package_id
WHERE h.app_id = $1 AND h.channel = $2 AND p.version = $3 AND p.withdrawn = FALSE AND h.id = (
	SELECT max(h2.id) FROM channel_history h2 JOIN packages p2 ON p2.id = h2.package_id
	WHERE h2.app_id = h.app_id AND h2.channel = h.channel AND h2.board = h.board AND p2.withdrawn = FALSE)`

// failedHostsSQL counts the distinct hosts of a group that reported 3/0 for a target version
// at or after a time (served by the partial index events_failures).
const failedHostsSQL = `SELECT count(DISTINCT machine_id) FROM events
WHERE group_id = $1 AND target_version = $2 AND result = 0 AND type = 3 AND at >= $3`

// haltOnFailures pauses, inside the batch's transaction (after its events are inserted), every
// group of groups (locked by the caller) that has HaltOnFailures set, is enabled, and now
// counts at least HaltOnFailures distinct hosts that reported a failure since FailuresSince
// for a version its channel currently offers; failures carries the batch's newest failure per
// (group, target version). Halting records the reason and time, bumps the catalog version and
// updates groups in place, so grants decided later in the same transaction see the pause.
// Failures for a version the channel no longer offers (a late report about an old release)
// never halt a group.
func (db *DB) haltOnFailures(ctx context.Context, tx *sql.Tx, groups map[string]Group, failures []Event) ([]Group, error) {
	var halted []Group
	for _, f := range failures {
		g, ok := groups[f.GroupID]
		if !ok || g.AppID != f.AppID || !g.Policy.Enabled || g.Policy.HaltOnFailures == 0 {
			continue
		}
		var offered int64
		if err := tx.QueryRowContext(ctx, offeredSQL, g.AppID, g.Channel, f.TargetVersion).Scan(&offered); err != nil {
			return nil, fmt.Errorf("halt on failures: is %s offered: %w", f.TargetVersion, err)
		}
		if offered == 0 {
			continue
		}
		var n int64
		if err := tx.QueryRowContext(ctx, failedHostsSQL, g.ID, f.TargetVersion, ms(g.Policy.FailuresSince)).Scan(&n); err != nil {
			return nil, fmt.Errorf("halt on failures: count failed hosts: %w", err)
		}
		if n < g.Policy.HaltOnFailures {
			continue
		}
		g.Policy.Enabled = false
		g.Policy.HaltedReason = HaltReason(f.TargetVersion, n, f.MachineID, f.ErrorCode, g.Policy.HaltOnFailures)
		g.Policy.HaltedAt = f.At
		g.Updated = f.At
		if _, err := tx.ExecContext(ctx, `UPDATE update_groups SET enabled = FALSE, halted_reason = $1, halted_at = $2, updated = $2 WHERE id = $3`,
			g.Policy.HaltedReason, ms(f.At), g.ID); err != nil {
			return nil, fmt.Errorf("halt on failures: pause group %s: %w", g.Name, err)
		}
		groups[g.ID] = g
		halted = append(halted, g)
	}
	if len(halted) > 0 {
		if err := bumpCatalog(ctx, tx); err != nil {
			return nil, err
		}
	}
	return halted, nil
}

// HaltReason is the text a group halted by HaltOnFailures records, e.g.
// "version 1.0.2: 1 host(s) failed (machine 0f…, error 1001 health gate); halt_on_failures=1":
// the version, how many distinct hosts failed it, the newest failure's machine and error code
// (flag bits dropped) and the threshold.
func HaltReason(version string, hosts int64, machine string, code int64, threshold int64) string {
	c := omaha.ErrorCode(code).Base()
	return fmt.Sprintf("version %s: %d host(s) failed (machine %s, error %d %s); halt_on_failures=%d",
		version, hosts, machine, int64(c), c.Describe(), threshold)
}
