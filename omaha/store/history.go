package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Bounds of a version history query (VersionHistory): a caller asks for at most
// MaxHistoryBuckets buckets and gets at most MaxHistoryRows rows, counted from at most
// MaxHistoryEvents events (of every app: the newest ones of the range).
const (
	MaxHistoryBuckets = 500
	MaxHistoryRows    = 20000
	MaxHistoryEvents  = 200000
)

// VersionPoint is how many distinct hosts of a group reported running Version during the
// bucket that starts at Start.
type VersionPoint struct {
	GroupID string
	Start   time.Time
	Version string
	Hosts   int64
}

// HistoryFilter selects a version history: the events of app (and of group, unless ""), from
// Since, in Buckets buckets of Bucket each.
type HistoryFilter struct {
	AppID   string
	GroupID string
	Since   time.Time
	Bucket  time.Duration
	Buckets int
	// MaxEvents bounds the events read (0 = MaxHistoryEvents).
	MaxEvents int
}

// History is the answer of VersionHistory.
type History struct {
	// Points are ordered by group, bucket and version.
	Points []VersionPoint
	// CountedFrom is the start of the first bucket counted: Since, or a later bucket when the
	// range holds more than MaxEvents events (the older buckets are left out whole).
	CountedFrom time.Time
	// Truncated says that more than MaxHistoryRows points matched and the last were left out.
	Truncated bool
}

// VersionHistory counts, per group, bucket and version, the distinct hosts that reported an
// event while running that version: every update check carries one (3/2), so a host that
// checked in during a bucket counts once there, under the version it ran. It reads the events
// of the range through their time index, at most MaxEvents of them: the cost grows with the
// fleet and the range (BenchmarkVersionHistory), and is bounded.
func (db *DB) VersionHistory(ctx context.Context, f HistoryFilter) (History, error) {
	if f.Bucket < time.Millisecond || f.Buckets < 1 || f.Buckets > MaxHistoryBuckets {
		return History{}, invalidf("version history: want 1..%d buckets of at least 1ms, got %d of %v", MaxHistoryBuckets, f.Buckets, f.Bucket)
	}
	maxEvents := f.MaxEvents
	if maxEvents <= 0 {
		maxEvents = MaxHistoryEvents
	}
	since, width := ms(f.Since), f.Bucket.Milliseconds()
	until := since + width*int64(f.Buckets)
	// Where the newest maxEvents events of the range begin (an index-only read).
	from := since
	var cut int64
	err := db.r.QueryRowContext(ctx, `SELECT at FROM events WHERE at >= $1 AND at < $2 ORDER BY at DESC LIMIT 1 OFFSET $3`,
		since, until, maxEvents).Scan(&cut)
	switch {
	case err == nil:
		from = since + ((cut-since)/width+1)*width // the first bucket wholly after the cut
	case !errors.Is(err, sql.ErrNoRows):
		return History{}, fmt.Errorf("store: version history: %w", err)
	}
	h := History{CountedFrom: fromMS(from)}
	if from >= until {
		return h, nil
	}
	// "app_id = $1 OR $1 = ''" keeps SQLite on the time index rather than the per-machine one.
	rows, err := db.r.QueryContext(ctx, `SELECT group_id, (at - $3) / $4 AS bucket, version, count(DISTINCT machine_id) FROM events
WHERE (app_id = $1 OR $1 = '') AND ($2 = '' OR group_id = $2) AND at >= $5 AND at < $6
GROUP BY group_id, bucket, version ORDER BY group_id, bucket, version LIMIT $7`,
		f.AppID, f.GroupID, since, width, from, until, MaxHistoryRows+1)
	if err != nil {
		return History{}, fmt.Errorf("store: version history: %w", err)
	}
	h.Points, err = collect(rows, "version history", func(s interface{ Scan(...any) error }) (VersionPoint, error) {
		var p VersionPoint
		var bucket int64
		err := s.Scan(&p.GroupID, &bucket, &p.Version, &p.Hosts)
		p.Start = fromMS(since + bucket*width)
		return p, err
	})
	if len(h.Points) > MaxHistoryRows {
		h.Points, h.Truncated = h.Points[:MaxHistoryRows], true
	}
	return h, err
}
