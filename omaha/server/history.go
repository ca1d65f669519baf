package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// Bounds and defaults of GET /api/v1/apps/{app}/history.
const (
	historyRange    = 7 * 24 * time.Hour
	historyBuckets  = 56
	maxHistoryRange = 90 * 24 * time.Hour
)

// history answers hosts per version over time for the dashboard's charts.
func (s *Server) history(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	span, buckets := historyRange, historyBuckets
	if v := q.Get("range"); v != "" {
		if span, err = time.ParseDuration(v); err != nil || span < time.Minute || span > maxHistoryRange {
			return nil, badRequest("range %q: want a duration from 1m to %v, such as 24h", v, maxHistoryRange)
		}
	}
	if v := q.Get("buckets"); v != "" {
		if buckets, err = strconv.Atoi(v); err != nil || buckets < 1 || buckets > store.MaxHistoryBuckets {
			return nil, badRequest("buckets %q: want 1..%d", v, store.MaxHistoryBuckets)
		}
	}
	f := store.HistoryFilter{AppID: id, Bucket: max(span/time.Duration(buckets), time.Millisecond), Buckets: buckets}
	var gs []store.Group
	if ref := q.Get("group"); ref != "" {
		g, err := s.findGroup(r, id, ref)
		if err != nil {
			return nil, err
		}
		f.GroupID, gs = g.ID, []store.Group{g}
	} else if gs, err = s.db.Groups(r.Context(), id); err != nil {
		return nil, err
	}
	// The last bucket is the one now falls in; buckets start on multiples of their width.
	f.Since = s.now().UTC().Truncate(f.Bucket).Add(f.Bucket - f.Bucket*time.Duration(buckets))
	h, err := s.db.VersionHistory(r.Context(), f)
	if err != nil {
		return nil, err
	}
	out := admin.History{Since: f.Since, Bucket: admin.Duration(f.Bucket), Buckets: buckets, CountedFrom: h.CountedFrom,
		Truncated: h.Truncated, Groups: []admin.GroupHistory{}}
	for _, g := range gs {
		out.Groups = append(out.Groups, admin.GroupHistory{GroupID: g.ID, Group: g.Name, Points: ofGroup(h.Points, g.ID,
			func(p store.VersionPoint) (string, admin.VersionPoint) {
				return p.GroupID, admin.VersionPoint{At: p.Start, Version: p.Version, Hosts: p.Hosts}
			})})
	}
	return out, nil
}

// getInstance answers one instance (GET /api/v1/apps/{app}/instances/{machine}).
func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) (any, error) {
	id, m, err := machineParam(r)
	if err != nil {
		return nil, err
	}
	in, err := s.db.Instance(r.Context(), id, m)
	if err != nil {
		return nil, err
	}
	return s.toInstance(in), nil
}
