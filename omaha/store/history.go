package store

import (
	"context"
	"fmt"
	"time"
)

// Bounds of a version history query (VersionHistory): a caller asks for at most
// MaxHistoryBuckets buckets and gets at most MaxHistoryRows rows.
const (
	MaxHistoryBuckets = 500
	MaxHistoryRows    = 20000
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
}

// VersionHistory counts, per group, bucket and version, the distinct hosts that reported an
// event while running that version: every update check carries one (3/2), so a host that
// checked in during a bucket counts once there, under the version it ran. Points are ordered
// by group, bucket and version. truncated says that more than MaxHistoryRows points matched
// and the last ones were left out.
func (db *DB) VersionHistory(ctx context.Context, f HistoryFilter) (points []VersionPoint, truncated bool, err error) {
	if f.Bucket < time.Millisecond || f.Buckets < 1 || f.Buckets > MaxHistoryBuckets {
		return nil, false, invalidf("version history: want 1..%d buckets of at least 1ms, got %d of %v", MaxHistoryBuckets, f.Buckets, f.Bucket)
	}
	since, width := ms(f.Since), f.Bucket.Milliseconds()
	until := since + width*int64(f.Buckets)
	rows, err := db.r.QueryContext(ctx, `SELECT group_id, (at - $3) / $4 AS bucket, version, count(DISTINCT machine_id) FROM events
WHERE app_id = $1 AND ($2 = '' OR group_id = $2) AND at >= $3 AND at < $5
GROUP BY group_id, bucket, version ORDER BY group_id, bucket, version LIMIT $6`,
		f.AppID, f.GroupID, since, width, until, MaxHistoryRows+1)
	if err != nil {
		return nil, false, fmt.Errorf("store: version history: %w", err)
	}
	points, err = collect(rows, "version history", func(s interface{ Scan(...any) error }) (VersionPoint, error) {
		var p VersionPoint
		var bucket int64
		err := s.Scan(&p.GroupID, &bucket, &p.Version, &p.Hosts)
		p.Start = fromMS(since + bucket*width)
		return p, err
	})
	if len(points) > MaxHistoryRows {
		points, truncated = points[:MaxHistoryRows], true
	}
	return points, truncated, err
}
