package admin

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Gate is the promotion gate of a channel: what a version must show on the channel it is
// promoted from (its soak time there, hosts of that channel's groups that committed it, and
// hosts that failed it or rolled it back) before the server points this channel at it.
type Gate struct {
	Channel      string   `json:"channel"`
	MinSoak      Duration `json:"min_soak"`
	MinCommitted int64    `json:"min_committed"`
	MaxFailures  int64    `json:"max_failures"`  // -1 = any number
	MaxRollbacks int64    `json:"max_rollbacks"` // -1 = any number
	// Auto lets the server promote by itself, from the channel before this one, each newer
	// version that passes the gate (recorded in the audit log as "omahad", action promote.auto).
	Auto    bool      `json:"auto,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
}

// GateCheck is one check of a gate: Wanted (a minimum for min_soak and min_committed, a
// maximum for max_failures and max_rollbacks), what the version Has, and whether it Passed.
type GateCheck struct {
	Name   string `json:"name"` // min_soak, min_committed, max_failures, max_rollbacks
	Wanted int64  `json:"wanted"`
	Has    int64  `json:"has"`
	Unit   string `json:"unit"` // seconds or hosts
	Passed bool   `json:"passed"`
	Text   string `json:"text"` // the check for people, with by how much it misses
}

// Gates lists an app's promotion gates.
func (c *Client) Gates(ctx context.Context, app string) ([]Gate, error) {
	var out []Gate
	return out, c.get(ctx, appPath(app, "gates"), nil, &out)
}

// SetGate sets (replaces) the promotion gate of channel g.Channel.
func (c *Client) SetGate(ctx context.Context, app string, g Gate) (Gate, error) {
	var out Gate
	return out, c.send(ctx, http.MethodPut, appPath(app, "channels", g.Channel, "gate"), g, &out)
}

// DeleteGate removes the promotion gate of a channel.
func (c *Client) DeleteGate(ctx context.Context, app, channel string) error {
	return c.send(ctx, http.MethodDelete, appPath(app, "channels", channel, "gate"), struct{}{}, nil)
}

// CheckGate evaluates, without promoting, the gate of p.To for promoting p.Version from p.From.
// It returns no checks when p.To has no gate.
func (c *Client) CheckGate(ctx context.Context, app string, p Promote) ([]GateCheck, error) {
	var out []GateCheck
	q := url.Values{"version": {p.Version}, "from": {p.From}, "to": {p.To}}
	return out, c.get(ctx, appPath(app, "gate-check"), q, &out)
}
