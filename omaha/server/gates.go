package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// maxReasonLen bounds the reason of a forced promotion.
const maxReasonLen = 512

func toGate(g store.Gate) admin.Gate {
	return admin.Gate{Channel: g.Channel, MinSoak: admin.Duration(g.MinSoak), MinCommitted: g.MinCommitted,
		MaxFailures: g.MaxFailures, MaxRollbacks: g.MaxRollbacks, Updated: g.Updated}
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
		MaxFailures: g.MaxFailures, MaxRollbacks: g.MaxRollbacks}, s.now())
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
