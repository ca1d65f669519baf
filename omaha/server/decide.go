package server

import (
	"cmp"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/store"
)

// CompareVersions orders version strings the way the server decides "newer": the part before
// '+' (build metadata, ignored) is split at the first '-' into a release and a pre-release; both
// are compared field by field on '.', numeric fields numerically and below alphanumeric ones,
// a shorter list of equal fields first; a release ranks above its own pre-releases
// (4081.2.0-rc.1 < 4081.2.0 < 4081.2.1 < 4081.10.0).
func CompareVersions(a, b string) int {
	ra, pa := splitVersion(a)
	rb, pb := splitVersion(b)
	if c := compareFields(ra, rb); c != 0 {
		return c
	}
	switch {
	case pa == pb:
		return 0
	case pa == "":
		return 1
	case pb == "":
		return -1
	}
	return compareFields(pa, pb)
}

func splitVersion(v string) (release, pre string) {
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v = v[:i]
	}
	release, pre, _ = strings.Cut(v, "-")
	return release, pre
}

func compareFields(a, b string) int {
	fa, fb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(fa) && i < len(fb); i++ {
		if c := compareField(fa[i], fb[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(fa), len(fb))
}

// compareField orders two fields of a version: all-digit fields as numbers of any length (by
// length once leading zeros are gone, then digit by digit), below all other fields, which
// compare as text.
func compareField(a, b string) int {
	da, db := allDigits(a), allDigits(b)
	switch {
	case da && db:
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if c := cmp.Compare(len(a), len(b)); c != 0 {
			return c
		}
	case da:
		return -1
	case db:
		return 1
	}
	return strings.Compare(a, b)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// inProgress reports whether s is a state between a grant and the host running the new version.
func inProgress(s store.State) bool {
	switch s {
	case store.StateGranted, store.StateDownloading, store.StateDownloaded, store.StateInstalled:
		return true
	}
	return false
}

// finishedGrant reports whether in runs the version it was granted and has checked in on it
// since (it is no longer between the grant and running it).
func finishedGrant(in *store.Instance) bool {
	return in.GrantedVersion != "" && CompareVersions(in.Version, in.GrantedVersion) >= 0 && !inProgress(in.State)
}

// applyEvent updates an instance for one reported event and returns the event row to record.
// Unknown (type, result) pairs are recorded and change nothing. An error (3/0) is a failure of
// the granted version (its target version, FailedAt, state error or rolledback) only while that
// grant is outstanding: the host runs an older version (as after a rollback), or runs the
// granted one but has not checked in since it reported installing it (the agent reports a
// failed health gate from the new version before it rolls back). Once the host runs the granted
// version and checked in on it, an error is about something else (update_engine reports a
// failed update check as 3/0 with 2000+HTTP status) and only sets LastError.
func applyEvent(in *store.Instance, ev *omaha.Event, now time.Time) store.Event {
	row := store.Event{
		AppID: in.AppID, MachineID: in.MachineID, GroupID: in.GroupID,
		Type: int(ev.Type), Result: int(ev.Result), ErrorCode: int64(ev.ErrorCode),
		Version: in.Version, PreviousVersion: ev.PreviousVersion, At: now,
	}
	if !(ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultSuccessReboot) {
		// Every event but the routine 3/2 is about the update the host was granted (and so
		// is a 3/2 that completes it, below).
		row.TargetVersion = in.GrantedVersion
	}
	switch {
	case ev.Type == omaha.EventTypeUpdateDownloadStarted && ev.Result == omaha.EventResultSuccess:
		in.State = store.StateDownloading
	case ev.Type == omaha.EventTypeUpdateDownloadFinished && ev.Result == omaha.EventResultSuccess:
		in.State = store.StateDownloaded
	case (ev.Type == omaha.EventTypeUpdateComplete || ev.Type == omaha.EventTypeInstanceHold) && ev.Result == omaha.EventResultSuccess:
		in.State = store.StateInstalled
		if in.GrantedVersion != "" {
			in.InstalledAt = now
		}
	case ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultError && finishedGrant(in):
		in.LastError, row.TargetVersion = int64(ev.ErrorCode), ""
	case ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultError:
		in.LastError, in.FailedAt = int64(ev.ErrorCode), now
		if ev.ErrorCode.Base() == omaha.ErrorCodeRollback {
			// The host booted its old version again: never offer it the version it left.
			in.State = store.StateRolledBack
			in.RollbackVersion = in.GrantedVersion
		} else {
			in.State = store.StateError
		}
	case ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultUpdateDeferred:
		in.LastError = int64(ev.ErrorCode)
	case ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultSuccessReboot:
		// The first check after an update carries the old version; the host now runs the
		// one it was granted, and its commit counts toward that version's promotion gates.
		if ev.PreviousVersion != "" && ev.PreviousVersion != "0.0.0.0" && in.GrantedVersion != "" &&
			CompareVersions(in.Version, in.GrantedVersion) >= 0 {
			in.State = store.StateComplete
			row.TargetVersion = in.GrantedVersion
		}
	}
	return row
}

// Reasons an update check is answered noupdate (metric label values and log fields).
const (
	reasonUnknownTrack = "unknown-track"
	reasonNoPackage    = "no-package"
	reasonUpToDate     = "up-to-date"
	reasonRolledBack   = "rolled-back"
	reasonPaused       = "paused"
	reasonRateLimited  = "rate-limited"
	// reasonNotEnrolled (enroll.go) answers hosts without a credential where one is required.
)

// verdict is what plan decides for an update check.
type verdict struct {
	offer  bool        // offer the channel's package
	grant  bool        // the offer needs a new slot of the group's policy (store.Grant)
	reason string      // why not, when !offer
	state  store.State // the instance's state when nothing is offered
}

// plan decides an update check for in (after its events were applied) given the channel's
// package for its board (nil if none) and the group's policy. It never offers a downgrade or
// the version the host rolled back from; a host holding a grant for the package gets it again
// without taking another slot, until the grant times out.
func plan(in store.Instance, pkg *store.Package, p store.Policy, now time.Time) verdict {
	settled := store.StateIdle
	switch {
	case in.State == store.StateComplete,
		inProgress(in.State) && in.GrantedVersion != "" && CompareVersions(in.Version, in.GrantedVersion) >= 0:
		settled = store.StateComplete
	}
	switch {
	case pkg == nil:
		return verdict{reason: reasonNoPackage, state: settled}
	case CompareVersions(in.Version, pkg.Version) >= 0:
		return verdict{reason: reasonUpToDate, state: settled}
	case pkg.Version == in.RollbackVersion:
		return verdict{reason: reasonRolledBack, state: store.StateRolledBack}
	case !p.Enabled:
		return verdict{reason: reasonPaused, state: store.StateOnHold}
	case holdsGrant(in, pkg.Version, p, now):
		return verdict{offer: true}
	}
	return verdict{offer: true, grant: true}
}

// holdsGrant reports whether in was granted version and the grant still holds: the host
// reported installed or failed since, or the update timeout has not passed; and, with a grant
// start timeout, the host started downloading or that timeout has not passed (an expired grant
// is granted anew, taking a slot again).
func holdsGrant(in store.Instance, version string, p store.Policy, now time.Time) bool {
	if in.GrantedVersion != version || in.GrantedAt.IsZero() {
		return false
	}
	if p.GrantStartTimeout > 0 && store.NotStarted(in) && !now.Before(in.GrantedAt.Add(p.GrantStartTimeout)) {
		return false
	}
	return p.UpdateTimeout == 0 || now.Before(in.GrantedAt.Add(p.UpdateTimeout)) ||
		!in.InstalledAt.Before(in.GrantedAt) || !in.FailedAt.Before(in.GrantedAt)
}
