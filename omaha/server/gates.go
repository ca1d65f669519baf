package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// maxReasonLen bounds the reason of a forced promotion.
const maxReasonLen = 512

func toGate(g store.Gate) admin.Gate {
	return admin.Gate{Channel: g.Channel, MinSoak: admin.Duration(g.MinSoak), MinCommitted: g.MinCommitted,
		MaxFailures: g.MaxFailures, MaxRollbacks: g.MaxRollbacks, Auto: g.Auto, Updated: g.Updated}
}

func toGateChecks(cs []store.GateCheck) []admin.GateCheck {
	out := []admin.GateCheck{}
	for _, c := range cs {
		out = append(out, admin.GateCheck{Name: c.Name, Wanted: c.Wanted, Has: c.Has, Unit: c.Unit(), Passed: c.Passed, Text: c.String()})
	}
	return out
}

func (s *Server) listGates(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.App(r.Context(), id); err != nil {
		return nil, err
	}
	gs, err := s.db.Gates(r.Context(), id)
	out := []admin.Gate{}
	for _, g := range gs {
		out = append(out, toGate(g))
	}
	return out, err
}

func (s *Server) setGate(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var g admin.Gate
	if err := decodeJSON(w, r, &g); err != nil {
		return nil, err
	}
	ch := r.PathValue("channel")
	if g.Channel != "" && g.Channel != ch {
		return nil, badRequest("the body names channel %q but the path %q", g.Channel, ch)
	}
	sg, err := s.db.SetGate(r.Context(), store.Gate{AppID: id, Channel: ch, MinSoak: time.Duration(g.MinSoak), MinCommitted: g.MinCommitted,
		MaxFailures: g.MaxFailures, MaxRollbacks: g.MaxRollbacks, Auto: g.Auto}, s.now())
	return toGate(sg), err
}

func (s *Server) deleteGate(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, s.db.DeleteGate(r.Context(), id, r.PathValue("channel"))
}

// gateCheck serves GET …/gate-check?version=&from=&to=: the gate's checks, without promoting.
func (s *Server) gateCheck(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	p := admin.Promote{Version: q.Get("version"), From: q.Get("from"), To: q.Get("to")}
	if p.Version == "" || !store.IsChannel(p.From) || !store.IsChannel(p.To) {
		return nil, badRequest("want ?version=V&from=C&to=C with channels %s", strings.Join(store.Channels, ", "))
	}
	checks, err := s.db.CheckGate(r.Context(), id, p.Version, p.From, p.To, s.now())
	return toGateChecks(checks), err
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var p admin.Promote
	if err := decodeJSON(w, r, &p); err != nil {
		return nil, err
	}
	note := noteOf(r)
	note.setTarget(id, "channels", p.To)
	ctx, now := r.Context(), s.now()
	if !p.Force {
		if p.Reason != "" {
			return nil, badRequest("a reason is only for a forced promotion (force: true)")
		}
		ps, err := s.db.PromoteGated(ctx, id, p.Version, p.From, p.To, now)
		if _, refused := store.IsGateError(err); refused && store.IsChannel(p.To) {
			s.m.promotions.WithLabelValues(p.To, "refused").Inc()
		} else if err == nil {
			s.m.promotions.WithLabelValues(p.To, "promoted").Inc()
		}
		return toPackages(ps), err
	}
	if strings.TrimSpace(p.Reason) == "" || len(p.Reason) > maxReasonLen || strings.ContainsFunc(p.Reason, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return nil, badRequest("a forced promotion needs a reason for the audit log: one line of at most %d bytes", maxReasonLen)
	}
	// Forced: record what the gate said, then promote whatever it says.
	checks, err := s.db.CheckGate(ctx, id, p.Version, p.From, p.To, now)
	if err != nil {
		return nil, err
	}
	ps, err := s.db.Promote(ctx, id, p.Version, p.From, p.To, now)
	if err != nil {
		return nil, err
	}
	result := "promoted"
	if !store.Passed(checks) {
		result = "forced"
		note.add("forced_past", toGateChecks(checks))
	}
	s.m.promotions.WithLabelValues(p.To, result).Inc()
	return toPackages(ps), nil
}

// auditServer is who the audit log names for the server's own changes.
const auditServer = "omahad"

// autoPromoteOnce promotes, for each automatic gate, each version its source channel carries
// that is newer than what the gated channel carries for that board, when the gate passes. Each
// promotion is logged, audited as the server's, and counted (result "auto").
func (s *Server) autoPromoteOnce(ctx context.Context) error {
	gs, err := s.db.AutoGates(ctx)
	if err != nil {
		return err
	}
	promoted := false
	for _, g := range gs {
		from := store.SourceChannel(g.Channel)
		chs, err := s.db.Channels(ctx, g.AppID)
		if err != nil {
			return err
		}
		var src, dst store.Channel
		for _, c := range chs {
			switch c.Name {
			case from:
				src = c
			case g.Channel:
				dst = c
			}
		}
		var versions []string
		for b, p := range src.Packages {
			if cur, ok := dst.Packages[b]; (!ok || CompareVersions(cur.Version, p.Version) < 0) && !slices.Contains(versions, p.Version) {
				versions = append(versions, p.Version)
			}
		}
		slices.SortFunc(versions, CompareVersions)
		for _, v := range versions {
			now := s.now()
			ps, checks, err := s.db.AutoPromote(ctx, g.AppID, v, g.Channel, now)
			if err != nil {
				return fmt.Errorf("promote %s from %s to %s: %w", v, from, g.Channel, err)
			}
			if len(ps) == 0 {
				continue
			}
			promoted = true
			s.m.promotions.WithLabelValues(g.Channel, "auto").Inc()
			s.log.Info("automatic promotion: the gate passed", "app", g.AppID, "version", v, "from", from, "to", g.Channel)
			n := &auditNote{}
			n.setTarget(g.AppID, "channels", g.Channel)
			detail, _ := json.Marshal(map[string]any{"version": v, "from": from, "to": g.Channel, "gate": toGateChecks(checks)})
			s.audit(ctx, store.AuditEntry{At: now, Who: auditServer, Action: "promote.auto", Target: n.target, Detail: detail})
		}
	}
	if promoted {
		return s.refresh(ctx, true)
	}
	return nil
}
