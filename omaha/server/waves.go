package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// DefaultAdvanceWavesEvery is how often the waves of groups are evaluated.
const DefaultAdvanceWavesEvery = time.Minute

// Reasons a new offer is held back by the group's rollout (metric label values).
const (
	reasonWave        = "wave"
	reasonOfficeHours = "office-hours"
)

// rollout is a group's staged-rollout policy, parsed once per catalog, and the open wave of each
// version it rolls out.
type rollout struct {
	waves  []store.Wave
	office *store.OfficeHours
	open   map[string]store.WaveState // version → open wave
}

// buildRollouts parses the waves and office hours of every group that has them.
func buildRollouts(c *store.Catalog) (map[string]*rollout, error) {
	out := map[string]*rollout{}
	for _, g := range c.Groups {
		if g.Policy.Waves == "" && g.Policy.OfficeHours == "" {
			continue
		}
		ws, err := store.ParseWaves(g.Policy.Waves)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", g.Name, err)
		}
		oh, err := store.ParseOfficeHours(g.Policy.OfficeHours)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", g.Name, err)
		}
		out[g.ID] = &rollout{waves: ws, office: oh, open: map[string]store.WaveState{}}
	}
	for _, w := range c.Waves {
		if r := out[w.GroupID]; r != nil {
			r.open[w.Version] = w
		}
	}
	return out, nil
}

// hold returns why a host of group g at machine machineID may not be granted version now
// under the group's office hours and waves ("" = it may). A version without a recorded wave is
// at its first wave.
func (c *catalog) hold(g *store.Group, machineID, version string, now time.Time) string {
	r := c.rollouts[g.ID]
	if r == nil {
		return ""
	}
	if !r.office.Open(now) {
		return reasonOfficeHours
	}
	if !store.InWave(r.waves, r.open[version].Wave, store.WavePosition(g.AppID, machineID)) {
		return reasonWave
	}
	return ""
}

// advanceWavesOnce records the first wave of each version a group with waves now rolls out and
// opens the next wave of each that soaked while the group stayed healthy. Each opened wave is
// logged, audited as the server's (action "group.wave") and reflected in the wave gauges.
func (s *Server) advanceWavesOnce(ctx context.Context) error {
	cat := s.cat.Load()
	opened := false
	var errs []error
	for _, g := range cat.wavedGroups() {
		a, r := cat.apps[g.AppID], cat.rollouts[g.ID]
		for _, v := range a.versions(g.Channel) {
			now := s.now()
			res, err := s.db.AdvanceWave(ctx, g.AppID, g.ID, v, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("group %s version %s: %w", g.Name, v, err))
				continue
			}
			if !res.Opened {
				continue
			}
			opened = true
			w := r.waves[min(res.State.Wave, len(r.waves)-1)]
			share := float64(w.Share) / 100
			s.m.waveOpened.Inc()
			s.log.Info("wave opened", "app", g.AppID, "group", g.Name, "version", v,
				"wave", res.State.Wave+1, "of", len(r.waves), "share_percent", share)
			n := &auditNote{}
			n.setTarget(g.AppID, "groups", g.Name)
			detail, _ := json.Marshal(map[string]any{"version": v, "wave": res.State.Wave, "waves": len(r.waves),
				"share_percent": share, "waves_spec": g.Policy.Waves})
			s.audit(ctx, store.AuditEntry{At: now, Who: auditServer, Action: "group.wave", Target: n.target, Detail: detail})
		}
	}
	if opened {
		if err := s.refresh(ctx, true); err != nil {
			errs = append(errs, err)
		}
	}
	s.setWaveGauges(s.cat.Load())
	return errors.Join(errs...)
}

// wavedGroups returns the groups with waves, ordered by app and name.
func (c *catalog) wavedGroups() []*store.Group {
	var gs []*store.Group
	for _, a := range c.apps {
		for _, g := range a.byID {
			if r := c.rollouts[g.ID]; r != nil && len(r.waves) > 0 {
				gs = append(gs, g)
			}
		}
	}
	slices.SortFunc(gs, func(a, b *store.Group) int { return cmp.Or(cmp.Compare(a.AppID, b.AppID), cmp.Compare(a.Name, b.Name)) })
	return gs
}

// versions returns the distinct versions a channel currently carries, oldest first.
func (a *appEntry) versions(channel string) []string {
	ch := a.channels[channel]
	if ch == nil {
		return nil
	}
	var vs []string
	for _, p := range ch.pkgs {
		if !slices.Contains(vs, p.Version) {
			vs = append(vs, p.Version)
		}
	}
	slices.SortFunc(vs, CompareVersions)
	return vs
}

// setWaveGauges sets omahad_wave and omahad_wave_hosts_share for every group with waves, for
// its channel's newest version.
func (s *Server) setWaveGauges(cat *catalog) {
	s.m.wave.Reset()
	s.m.waveShare.Reset()
	for _, g := range cat.wavedGroups() {
		a, r := cat.apps[g.AppID], cat.rollouts[g.ID]
		vs := a.versions(g.Channel)
		if len(vs) == 0 {
			continue
		}
		idx := min(r.open[vs[len(vs)-1]].Wave, len(r.waves)-1)
		labels := prometheus.Labels{"app": a.Name, "group": g.Name}
		s.m.wave.With(labels).Set(float64(idx))
		s.m.waveShare.With(labels).Set(float64(r.waves[idx].Share) / store.WaveScale)
	}
}

// rolloutStatus is where group g's rollout of its channel's newest version stands (nil for a
// group without waves or office hours).
func (s *Server) rolloutStatus(g store.Group, now time.Time) *admin.Rollout {
	cat := s.cat.Load()
	a := cat.apps[g.AppID]
	if a == nil || (g.Policy.Waves == "" && g.Policy.OfficeHours == "") {
		return nil
	}
	ws, _ := store.ParseWaves(g.Policy.Waves)
	oh, _ := store.ParseOfficeHours(g.Policy.OfficeHours)
	out := &admin.Rollout{Waves: len(ws), SharePercent: 100, OfficeHoursOpen: oh.Open(now)}
	vs := a.versions(g.Channel)
	if len(vs) > 0 {
		out.Version = vs[len(vs)-1]
	}
	if len(ws) == 0 {
		return out
	}
	var st store.WaveState
	if r := cat.rollouts[g.ID]; r != nil {
		st = r.open[out.Version]
	}
	out.Wave = min(st.Wave, len(ws)-1)
	out.SharePercent = float64(ws[out.Wave].Share) / 100
	out.Opened = st.Opened
	if out.Wave < len(ws)-1 && !st.Opened.IsZero() {
		out.NextAt = st.Opened.Add(ws[out.Wave].Soak)
	}
	switch {
	case out.Wave == len(ws)-1:
	case g.Policy.HaltedReason != "":
		out.Held = "halted"
	case !g.Policy.Enabled:
		out.Held = "paused"
	case !out.NextAt.IsZero() && now.Before(out.NextAt):
		out.Held = "soaking"
	}
	return out
}
