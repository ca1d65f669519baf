package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// AuditEntry is one change recorded in the audit log: who made it (the token's id and name, or
// "omahad" for the server's own changes), from where (the client's address), what (an action
// such as "promote", the target it changed, e.g. "apps/<id>/channels/stable", and a short JSON
// description of the change) and when.
type AuditEntry struct {
	ID      int64
	At      time.Time
	TokenID string
	Who     string
	Remote  string
	Action  string
	Target  string
	Detail  json.RawMessage // a JSON value, at most MaxAuditDetail bytes
}

// Limits of an audit entry.
const (
	MaxAuditDetail = 4096
	MaxAuditTarget = 512
)

// AuditFilter selects audit entries. Zero fields match all.
type AuditFilter struct {
	Since, Until time.Time // At >= Since, At < Until
	// Target matches entries whose target is Target or lies below it
	// ("apps/X" matches "apps/X/groups/beta").
	Target string
	Before int64 // only entries with ID < Before: the next page after a page ending at Before
	Limit  int   // at most this many (DefaultLimit when 0, MaxLimit at most)
}

// AddAudit records a change. The detail must be valid JSON.
func (db *DB) AddAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	if err := checkText("audit who", e.Who, MaxNameLen, true); err != nil {
		return e, err
	}
	if err := checkText("audit action", e.Action, MaxNameLen, true); err != nil {
		return e, err
	}
	if err := checkText("audit target", e.Target, MaxAuditTarget, false); err != nil {
		return e, err
	}
	if err := checkText("audit remote address", e.Remote, MaxNameLen, false); err != nil {
		return e, err
	}
	if len(e.Detail) == 0 {
		e.Detail = json.RawMessage("{}")
	}
	if len(e.Detail) > MaxAuditDetail || !json.Valid(e.Detail) {
		return e, invalidf("audit detail is not JSON of at most %d bytes", MaxAuditDetail)
	}
	e.At = fromMS(ms(e.At))
	err := db.tx(ctx, "add audit entry", func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO audit (at, token_id, who, remote, action, target, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
			ms(e.At), e.TokenID, e.Who, e.Remote, e.Action, e.Target, string(e.Detail)).Scan(&e.ID)
	})
	return e, err
}

// Audit lists audit entries, newest first.
func (db *DB) Audit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	until := int64(1<<63 - 1)
	if !f.Until.IsZero() {
		until = f.Until.UnixMilli()
	}
	before := int64(1<<63 - 1)
	if f.Before > 0 {
		before = f.Before
	}
	prefix := f.Target + "/"
	rows, err := db.r.QueryContext(ctx, `SELECT id, at, token_id, who, remote, action, target, detail FROM audit
WHERE at >= $1 AND at < $2 AND id < $3 AND ($4 = '' OR target = $4 OR substr(target, 1, $5) = $6)
ORDER BY id DESC LIMIT $7`, ms(f.Since), until, before, f.Target, len(prefix), prefix, limit(f.Limit))
	if err != nil {
		return nil, fmt.Errorf("store: list audit entries: %w", err)
	}
	return collect(rows, "list audit entries", func(s interface{ Scan(...any) error }) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		var detail string
		err := s.Scan(&e.ID, &at, &e.TokenID, &e.Who, &e.Remote, &e.Action, &e.Target, &detail)
		e.At, e.Detail = fromMS(at), json.RawMessage(detail)
		return e, err
	})
}
