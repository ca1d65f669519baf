package admin

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"
)

// AuditEntry is one change recorded by the server: who (the token's name, or "omahad" for the
// server's own changes), from where, what (action, target, and a short JSON of the change) and
// when.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Who     string          `json:"who"`
	TokenID string          `json:"token_id,omitempty"`
	Remote  string          `json:"remote,omitempty"`
	Action  string          `json:"action"`
	Target  string          `json:"target"`
	Detail  json.RawMessage `json:"detail"`
}

// AuditPage is one page of the audit log, newest first. Next, when not zero, is the Before of
// the next (older) page.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Next    int64        `json:"next,omitempty"`
}

// AuditQuery filters the audit log; zero fields match all.
type AuditQuery struct {
	Since, Until time.Time // Since <= At < Until
	Target       string    // this target and everything below it, e.g. "apps/<id>/channels/stable"
	Before       int64     // continue after a page: its Next
	Limit        int
}

// Values encodes q as the query of GET /api/v1/audit.
func (q AuditQuery) Values() url.Values {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	if q.Target != "" {
		v.Set("target", q.Target)
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Audit returns one page of the audit log, newest first.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	var out AuditPage
	return out, c.get(ctx, "/api/v1/audit", q.Values(), &out)
}
