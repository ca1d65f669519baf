package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// App is an Omaha application.
type App struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Trust   json.RawMessage `json:"trust,omitempty"` // payload trust root
	Created time.Time       `json:"created,omitzero"`
}

// Package is a published payload file.
type Package struct {
	ID              int64     `json:"id"`
	AppID           string    `json:"app_id"`
	Version         string    `json:"version"`
	Board           string    `json:"board"`
	SecurityVersion uint64    `json:"security_version"`
	FileName        string    `json:"file_name"`
	Size            int64     `json:"size"`
	SHA256          string    `json:"sha256"` // hex
	SHA1            string    `json:"sha1"`   // base64
	URL             string    `json:"url,omitempty"`
	Withdrawn       bool      `json:"withdrawn,omitempty"`
	Created         time.Time `json:"created,omitzero"`
	// Format is FormatTwinslot (a signed twinslot payload) or FormatFlatcar (update_engine's
	// CrAU payload, checked for its header, size and hashes only).
	Format string `json:"format"`
	// Extras are the files served alongside a Flatcar package (OEM and sysext images), from
	// the same codebase; update_engine's postinstall downloads them.
	Extras []File `json:"extras,omitempty"`
}

// Package formats.
const (
	FormatTwinslot = "twinslot"
	FormatFlatcar  = "flatcar"
)

// File is a file omahad stores or knows: the answer to an upload (POST …/files) and an extra
// file of a Flatcar package.
type File struct {
	Name   string `json:"name,omitempty"` // file name hosts download (extras only)
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
	SHA1   string `json:"sha1"`   // base64
}

// FlatcarPackage creates a Flatcar package (POST /api/v1/apps/{app}/flatcar). The main file is
// update_engine's payload ("CrAU" header). With URL empty, the main file and every extra must
// have been uploaded first (POST /api/v1/apps/{app}/files, which answers File with the hashes)
// and omahad serves them; with URL set, hosts download the main file there and every extra from
// the same directory (the codebase), and omahad checks only that the fields are well formed.
// omahad checks the stored files against Size, SHA256 and SHA1 and the main file's CrAU magic
// and major version, and refuses (422) what does not match; a file that was never uploaded is
// 404. Publishing the same package again is not an error.
type FlatcarPackage struct {
	Version string `json:"version"`           // e.g. 4152.2.0
	Board   string `json:"board"`             // e.g. amd64-usr
	Channel string `json:"channel,omitempty"` // point this channel at it ("" = publish only)
	Name    string `json:"name"`              // e.g. flatcar_production_update.gz
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`        // hex
	SHA1    string `json:"sha1"`          // base64
	URL     string `json:"url,omitempty"` // full external download URL of the main file, ending in Name
	Extras  []File `json:"extras,omitempty"`
}

// Channel is a release channel and its current package per board.
type Channel struct {
	Name        string             `json:"name"`
	ExternalURL string             `json:"external_url,omitempty"`
	Packages    map[string]Package `json:"packages"` // board → package
}

// ChannelChange sets a channel's external download base URL ("" serves packages from omahad).
// {board}, {version} and {sha256} in it are replaced per package.
type ChannelChange struct {
	ExternalURL string `json:"external_url"`
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// MarshalJSON writes "1h0m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string (or a number of seconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"1h30m\": %w", err)
		}
		if secs > math.MaxInt64/float64(time.Second) || secs < math.MinInt64/float64(time.Second) {
			return fmt.Errorf("duration: %v seconds is out of range", secs)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Policy is a group's rollout policy.
type Policy struct {
	Enabled       bool     `json:"enabled"`        // false = updates paused
	MaxUpdates    int64    `json:"max_updates"`    // hosts granted an update per period; 0 = no cap
	Period        Duration `json:"period"`         // the window of MaxUpdates
	UpdateTimeout Duration `json:"update_timeout"` // a grant without 3/1 in this time frees its slot; 0 = never
	// HaltOnFailures pauses the group (Enabled = false) when this many distinct hosts of it
	// report a failed update or a rollback (event 3/0) for the version it currently offers,
	// counted since the group was last enabled; 0 = off.
	HaltOnFailures int64 `json:"halt_on_failures"`
	// HaltedReason says why the server halted the group and HaltedAt when, e.g. "version 1.0.2:
	// 1 host(s) failed (machine …, error 1001 health gate); halt_on_failures=1". Set only by the
	// server; re-enabling the group clears both.
	HaltedReason string    `json:"halted_reason,omitempty"`
	HaltedAt     time.Time `json:"halted_at,omitzero"`
	// DisablePayloadBackoff asks update_engine not to defer the next attempt after a failed
	// download (the postinstall action's DisablePayloadBackoff="true"); false = its backoff.
	DisablePayloadBackoff bool `json:"disable_payload_backoff,omitempty"`
	// Waves rolls each new version out in stages, e.g. "1%:1h,10%:2h,50%:4h,100%": a share of
	// the group's hosts (the same hosts first every time) and how long it soaks before the next
	// wave opens; "" = every host at once.
	Waves string `json:"waves,omitempty"`
	// OfficeHours are the windows in which hosts may be offered a new update, e.g. "Mon-Fri
	// 09:00-17:00 Europe/Berlin" (several separated by ";"); "" = any time.
	OfficeHours string `json:"office_hours,omitempty"`
	// RequireEnrollment serves only hosts presenting the credential they enrolled for their
	// machine id: others get noupdate ("not-enrolled"), take no slot, and their failure events
	// do not count toward HaltOnFailures.
	RequireEnrollment bool `json:"require_enrollment,omitempty"`
	// Anonymous is "flatcar" when such a group still serves update_engine clients (which cannot
	// enroll) as before; "" or "none" when it serves no unenrolled client.
	Anonymous string `json:"anonymous,omitempty"`
	// GrantStartTimeout frees the slot of a grant whose host did not report download started
	// (13/1) within it; 0 = off.
	GrantStartTimeout Duration `json:"grant_start_timeout,omitempty"`
}

// Group is a set of hosts following a channel under one policy.
type Group struct {
	ID      string    `json:"id,omitempty"`
	AppID   string    `json:"app_id,omitempty"`
	Name    string    `json:"name"`
	Channel string    `json:"channel"`
	Default bool      `json:"default,omitempty"` // the channel's default group (named after it)
	Policy  Policy    `json:"policy"`
	Created time.Time `json:"created,omitzero"`
	Updated time.Time `json:"updated,omitzero"`
}

// GroupChange changes some fields of a group; nil fields stay.
type GroupChange struct {
	Channel       *string   `json:"channel,omitempty"`
	Enabled       *bool     `json:"enabled,omitempty"`
	MaxUpdates    *int64    `json:"max_updates,omitempty"`
	Period        *Duration `json:"period,omitempty"`
	UpdateTimeout *Duration `json:"update_timeout,omitempty"`
	// HaltOnFailures sets the automatic halt threshold (0 = off). Enabled=true re-enables a
	// halted group and clears its reason.
	HaltOnFailures *int64 `json:"halt_on_failures,omitempty"`
	// DisablePayloadBackoff sets Policy.DisablePayloadBackoff.
	DisablePayloadBackoff *bool `json:"disable_payload_backoff,omitempty"`
	// Waves and OfficeHours set Policy.Waves and Policy.OfficeHours; "" or "none" clears.
	Waves       *string `json:"waves,omitempty"`
	OfficeHours *string `json:"office_hours,omitempty"`
	// RequireEnrollment, Anonymous and GrantStartTimeout set the Policy fields of those names.
	RequireEnrollment *bool     `json:"require_enrollment,omitempty"`
	Anonymous         *string   `json:"anonymous,omitempty"`
	GrantStartTimeout *Duration `json:"grant_start_timeout,omitempty"`
}

// EnrollTokenCreate asks for an enrollment token.
type EnrollTokenCreate struct {
	Name      string   `json:"name,omitempty"`
	Group     string   `json:"group,omitempty"`      // group name or id: its credentials count only there; "" = any group
	MaxUses   int64    `json:"max_uses,omitempty"`   // hosts that may enroll with it; 0 = no limit
	ExpiresIn Duration `json:"expires_in,omitempty"` // 0 = never expires
}

// EnrollToken is an enrollment token as listed (never with its secret).
type EnrollToken struct {
	ID      string    `json:"id"`
	AppID   string    `json:"app_id"`
	GroupID string    `json:"group_id,omitempty"`
	Name    string    `json:"name,omitempty"`
	MaxUses int64     `json:"max_uses,omitempty"`
	Uses    int64     `json:"uses"`
	Expires time.Time `json:"expires,omitzero"`
	Revoked time.Time `json:"revoked,omitzero"`
	Created time.Time `json:"created"`
}

// HostCredential describes an enrolled host's credential (never the secret).
type HostCredential struct {
	AppID     string    `json:"app_id"`
	MachineID string    `json:"machine_id"`
	GroupID   string    `json:"group_id,omitempty"`
	TokenID   string    `json:"token_id"`
	Enrolled  time.Time `json:"enrolled"`
}

// EnrollTokenCreated is a new enrollment token with its secret, shown only this once.
type EnrollTokenCreated struct {
	EnrollToken
	Secret string `json:"secret"`
}

// Instance is one host running an app.
type Instance struct {
	MachineID       string    `json:"machine_id"`
	Alias           string    `json:"alias,omitempty"`
	GroupID         string    `json:"group_id"`
	Group           string    `json:"group,omitempty"` // group name
	Track           string    `json:"track"`
	Version         string    `json:"version"`
	Board           string    `json:"board"`
	OEM             string    `json:"oem,omitempty"`
	BootID          string    `json:"boot_id,omitempty"`
	State           string    `json:"state"`
	LastError       int64     `json:"last_error,omitempty"`
	FirstSeen       time.Time `json:"first_seen,omitzero"`
	LastCheck       time.Time `json:"last_check,omitzero"`
	GrantedVersion  string    `json:"granted_version,omitempty"`
	GrantedAt       time.Time `json:"granted_at,omitzero"`
	InstalledAt     time.Time `json:"installed_at,omitzero"`
	FailedAt        time.Time `json:"failed_at,omitzero"`
	RollbackVersion string    `json:"rollback_version,omitempty"`
}

// Event is one event a host reported.
type Event struct {
	ID              int64     `json:"id"`
	MachineID       string    `json:"machine_id"`
	GroupID         string    `json:"group_id"`
	Type            int       `json:"type"`
	Result          int       `json:"result"`
	ErrorCode       int64     `json:"error_code,omitempty"`
	Description     string    `json:"description"` // e.g. "update complete: error (RollbackError)"
	Version         string    `json:"version"`
	PreviousVersion string    `json:"previous_version,omitempty"`
	TargetVersion   string    `json:"target_version,omitempty"`
	At              time.Time `json:"at"`
}

// Promote asks to point channel To at the packages of Version that channel From carries.
type Promote struct {
	Version string `json:"version"`
	From    string `json:"from"`
	To      string `json:"to"`
	// Force promotes even when the gate of To does not pass; Reason (required with Force)
	// says why, for the audit log.
	Force  bool   `json:"force,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Withdraw asks to withdraw every package of Version: channels fall back to their previous one.
type Withdraw struct {
	Version string `json:"version"`
}

// Status is an app's rollout at a glance.
type Status struct {
	App      App           `json:"app"`
	Channels []Channel     `json:"channels"`
	Groups   []GroupStatus `json:"groups"`
}

// GroupStatus is one group's hosts by version and state, and its failures by target version.
type GroupStatus struct {
	Group     Group      `json:"group"`
	Instances int64      `json:"instances"`
	Counts    []Count    `json:"counts"`
	Failures  []Failures `json:"failures,omitempty"`
	// Rollout is where the group's rollout of its channel's newest version stands, for a group
	// with waves or office hours.
	Rollout *Rollout `json:"rollout,omitempty"`
}

// Rollout is the state of a group's staged rollout of one version.
type Rollout struct {
	Version string `json:"version,omitempty"` // the channel's newest version ("" = nothing to roll out)
	// Wave is the open wave's index (0-based) of Waves in all (0 when the group has no waves).
	Wave  int `json:"wave"`
	Waves int `json:"waves"`
	// SharePercent is the share of the group's hosts the open wave offers the version to.
	SharePercent float64   `json:"share_percent"`
	Opened       time.Time `json:"opened,omitzero"` // when the open wave opened (zero: not recorded yet)
	// NextAt is when the open wave has soaked and the next may open (zero for the last wave).
	NextAt time.Time `json:"next_at,omitzero"`
	// Held says why the rollout does not move on by itself: "halted", "paused", "soaking", or
	// "" (the last wave is open, or the next opens at the next evaluation).
	Held string `json:"held,omitempty"`
	// OfficeHoursOpen is whether new updates may be offered now under the office hours.
	OfficeHoursOpen bool `json:"office_hours_open"`
}

// Count is the number of hosts running Version in State.
type Count struct {
	Version string `json:"version"`
	State   string `json:"state"`
	N       int64  `json:"n"`
}

// Failures counts distinct hosts that failed (3/0) or rolled back (3/0/44) trying TargetVersion.
type Failures struct {
	TargetVersion string `json:"target_version"`
	Failed        int64  `json:"failed"`
	RolledBack    int64  `json:"rolled_back"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	// Gates lists each check of the gate that refused a promotion (409).
	Gates []GateCheck `json:"gates,omitempty"`
}
