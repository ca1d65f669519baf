package admin

import "time"

// History is how many hosts of each group ran each version over time (GET
// /api/v1/apps/{app}/history?range=168h&buckets=48&group=…): the range ending now is cut into
// Buckets buckets of Bucket, starting at Since, and a host counts in a bucket under the version
// it ran when it checked in or reported an event there. Hosts that did not check in during a
// bucket are not counted in it.
type History struct {
	Since   time.Time `json:"since"`
	Bucket  Duration  `json:"bucket"`
	Buckets int       `json:"buckets"`
	// CountedFrom is the start of the first bucket counted: Since, or later when the range
	// holds more check-ins than the server reads for one answer (200,000); the buckets before it
	// are not counted (ask for a shorter range).
	CountedFrom time.Time `json:"counted_from"`
	// Truncated says the server left out points beyond its limit: ask for fewer buckets.
	Truncated bool           `json:"truncated,omitempty"`
	Groups    []GroupHistory `json:"groups"`
}

// GroupHistory is one group's points, ordered by time and version.
type GroupHistory struct {
	GroupID string         `json:"group_id"`
	Group   string         `json:"group"` // name
	Points  []VersionPoint `json:"points"`
}

// VersionPoint is the number of distinct hosts that ran Version during the bucket starting At.
type VersionPoint struct {
	At      time.Time `json:"at"`
	Version string    `json:"version"`
	Hosts   int64     `json:"hosts"`
}
