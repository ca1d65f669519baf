package admin

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

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

// HistoryQuery selects a History: the Range ending now (0 = 7 days) in Buckets buckets (0 =
// the server's default), of one group (id or name; "" = every group).
type HistoryQuery struct {
	Range   time.Duration
	Buckets int
	Group   string
}

// History returns how many hosts of each group ran each version over time.
func (c *Client) History(ctx context.Context, app string, q HistoryQuery) (History, error) {
	v := url.Values{}
	if q.Range > 0 {
		v.Set("range", q.Range.String())
	}
	if q.Buckets > 0 {
		v.Set("buckets", strconv.Itoa(q.Buckets))
	}
	if q.Group != "" {
		v.Set("group", q.Group)
	}
	var out History
	return out, c.get(ctx, appPath(app, "history"), v, &out)
}

// Instance returns one host of an app.
func (c *Client) Instance(ctx context.Context, app, machineID string) (Instance, error) {
	var out Instance
	return out, c.get(ctx, appPath(app, "instances", machineID), nil, &out)
}
