package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/store"
)

// handleUpdate serves POST /v1/update/: one Omaha request, one response.
func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	// One byte over the limit so that ParseRequest itself reports ErrTooLarge.
	req, err := omaha.ParseRequest(http.MaxBytesReader(w, r.Body, omaha.MaxRequestBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, omaha.ErrTooLarge), errors.As(err, &mbe):
			s.refuse(w, "too-large", http.StatusRequestEntityTooLarge, err)
		case errors.Is(err, omaha.ErrUnsupportedProtocol):
			s.refuse(w, "protocol", http.StatusBadRequest, err)
		default:
			s.refuse(w, "malformed", http.StatusBadRequest, err)
		}
		return
	}
	// Judge every untrusted field before anything is recorded. A bad appid is answered per
	// app (error-invalidAppId); any other bad field refuses the whole request.
	for _, a := range req.Apps {
		var fe *omaha.FieldError
		if err := a.Validate(); err != nil && !(errors.As(err, &fe) && fe.Field == "appid") {
			s.refuse(w, "invalid-field", http.StatusBadRequest, err)
			return
		}
	}
	now := s.now()
	resp := omaha.NewResponse()
	id := requester{cred: hostCredential(r), flatcar: isFlatcar(req)}
	for _, a := range req.Apps {
		if err := s.answer(r, resp, req.OS, id, a, now); err != nil {
			s.log.Error("update request failed", "machine", a.MachineID, "err", err)
			http.Error(w, "internal error; try again later", http.StatusInternalServerError)
			return
		}
	}
	body, err := resp.Marshal()
	if err != nil {
		s.log.Error("marshal response", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", omaha.ContentType)
	w.Write(body)
}

func (s *Server) refuse(w http.ResponseWriter, reason string, code int, err error) {
	s.m.rejected.WithLabelValues(reason).Inc()
	s.log.Debug("refused Omaha request", "reason", reason, "err", err)
	http.Error(w, err.Error(), code)
}

// requester is what a request says about its sender beyond its <app>s: the host credential
// it presented ("" if none) and whether it is update_engine.
type requester struct {
	cred    string
	flatcar bool
}

// answer answers one <app> of a request and queues its check-in and events. In a group that
// requires enrollment, a host whose credential does not prove its machine id is answered
// noupdate; its events are recorded without a target version (so they never count toward the
// halt rule nor a promotion gate) and change nothing about its grant; and the row of an
// enrolled machine id is not touched by such a request at all.
func (s *Server) answer(r *http.Request, resp *omaha.Response, os *omaha.OS, who requester, a *omaha.App, now time.Time) error {
	ctx := r.Context()
	id, err := omaha.ParseAppID(a.AppID)
	if err != nil {
		resp.AddApp(a.AppID, omaha.StatusInvalidAppID)
		s.m.rejected.WithLabelValues("invalid-appid").Inc()
		return nil
	}
	app := s.cat.Load().apps[id]
	if app == nil {
		resp.AddApp(a.AppID, omaha.StatusUnknownApplication)
		s.m.rejected.WithLabelValues("unknown-app").Inc()
		s.log.Debug("unknown app; nothing recorded", "app", id, "machine", a.MachineID)
		return nil
	}
	g := app.group(a.Track)
	if g == nil {
		// Nebraska's answer: the app status names the problem, the update check fails.
		ra := resp.AddApp(a.AppID, omaha.StatusUnknownApplicationOrGroup)
		ra.Acknowledge(a)
		if a.UpdateCheck != nil {
			ra.AddUpdateCheck(omaha.StatusInternalError)
			s.m.checks.WithLabelValues(string(omaha.StatusUnknownApplicationOrGroup), reasonUnknownTrack).Inc()
		}
		s.log.Debug("unknown track: answered error-unknownApplicationOrGroup, nothing recorded", "app", id, "machine", a.MachineID, "track", a.Track)
		return nil
	}
	ra := resp.AddApp(a.AppID, omaha.StatusOK)
	ra.Acknowledge(a)

	// Requests of one machine are serialised from reading its row to queueing the new one
	// (a grant decision included: the machine's next request must see it); nothing else waits.
	unlock := s.machines.lock(a.MachineID)
	tr, err := s.trustOf(ctx, who.cred, who.flatcar, id, a.MachineID, g, now)
	if err != nil {
		unlock()
		return err
	}
	in, known, err := s.instance(ctx, id, a.MachineID, now)
	if err != nil {
		unlock()
		return err
	}
	prev := in
	if tr.trusted || !tr.enrolled {
		in.Alias, in.GroupID, in.Track, in.Version, in.Board = a.MachineAlias, g.ID, a.Track, a.Version, board(a.Board, os)
		in.OEM, in.BootID, in.LastCheck = a.OEM, a.BootID, now
	}
	var evs []store.Event
	durable := false
	for _, ev := range a.Events {
		durable = durable || !routineEvent(a, ev)
		s.m.event(ev.Type, ev.Result)
		if !tr.trusted {
			scratch := in
			row := applyEvent(&scratch, ev, now)
			row.GroupID, row.Version, row.TargetVersion = g.ID, a.Version, ""
			evs = append(evs, row)
			s.m.untrusted.WithLabelValues("event").Inc()
			continue
		}
		evs = append(evs, applyEvent(&in, ev, now))
		if ev.Result == omaha.EventResultError {
			s.log.Warn("host reported a failed update", "app", id, "machine", a.MachineID, "group", g.Name,
				"version", in.Version, "target", in.GrantedVersion, "code", ev.ErrorCode.String())
		}
	}
	switch {
	case a.UpdateCheck != nil && !tr.trusted:
		if !tr.enrolled {
			in.State = store.StateOnHold
		}
		ra.AddUpdateCheck(omaha.StatusNoUpdate)
		s.m.checks.WithLabelValues(string(omaha.StatusNoUpdate), reasonNotEnrolled).Inc()
		s.m.untrusted.WithLabelValues("check").Inc()
	case a.UpdateCheck != nil:
		if err := s.check(ctx, r, ra, &in, app, g, now); err != nil {
			unlock()
			return err
		}
	}
	seq, err := s.rec.put(ctx, in, known && routine(&prev, &in), evs)
	unlock()
	if err != nil || !durable {
		return err
	}
	// A state-changing event is acknowledged only once it is committed: update_engine does
	// not send an event again after a 200.
	return s.rec.wait(ctx, seq)
}

// DefaultBoard is the board of a host that sends neither board nor a known os arch, as
// Nebraska assumes.
const DefaultBoard = "amd64-usr"

// board returns the board a host's packages are chosen by: its board attribute, else the
// board of its os arch (Nebraska's rule), else DefaultBoard.
func board(b string, os *omaha.OS) string {
	if b != "" {
		return b
	}
	if os != nil {
		switch strings.ToLower(os.Arch) {
		case "arm64", "aarch64", "arm":
			return "arm64-usr"
		}
	}
	return DefaultBoard
}

// routineEvent reports whether ev is the 3/2 every update check carries, which is answered
// before it is written (see checkins). A 3/2 that names the version the host updated from is
// its success report after the health gate passed (the first check after a committed update),
// and a 3/2 sent without an update check is a report of its own: both are acknowledged only
// once committed, like every other event, so a committed host's success survives a crash.
func routineEvent(a *omaha.App, ev *omaha.Event) bool {
	return a.UpdateCheck != nil && ev.Type == omaha.EventTypeUpdateComplete && ev.Result == omaha.EventResultSuccessReboot &&
		(ev.PreviousVersion == "" || ev.PreviousVersion == "0.0.0.0")
}

// routine reports whether next differs from prev only in the columns of a routine check-in
// (store.Batch.Routine): not in its group or anything about grants.
func routine(prev, next *store.Instance) bool {
	return prev.GroupID == next.GroupID && prev.GrantedVersion == next.GrantedVersion && prev.GrantedAt.Equal(next.GrantedAt) &&
		prev.InstalledAt.Equal(next.InstalledAt) && prev.FailedAt.Equal(next.FailedAt) && prev.RollbackVersion == next.RollbackVersion
}

// instance returns the newest known row of an instance: queued or written (known), or a new one.
func (s *Server) instance(ctx context.Context, app, machine string, now time.Time) (in store.Instance, known bool, err error) {
	in, known, absent := s.rec.lookup(instKey{app, machine})
	switch {
	case known:
		return in, true, nil
	case absent:
		return store.Instance{AppID: app, MachineID: machine, State: store.StateIdle, FirstSeen: now}, false, nil
	}
	start := time.Now()
	in, err = s.db.Instance(ctx, app, machine)
	s.m.observeDB("read_instance", start)
	if errors.Is(err, store.ErrNotFound) {
		return store.Instance{AppID: app, MachineID: machine, State: store.StateIdle, FirstSeen: now}, false, nil
	}
	if err != nil {
		return store.Instance{}, false, err
	}
	s.rec.remember(in)
	return in, true, nil
}

// check answers an update check: plan, then take a slot of the group's policy if needed.
func (s *Server) check(ctx context.Context, r *http.Request, ra *omaha.App, in *store.Instance, app *appEntry, g *store.Group, now time.Time) error {
	ch, pe := app.pkg(g.Channel, in.Board)
	var pkg *store.Package
	if pe != nil {
		pkg = &pe.Package
	}
	v := plan(*in, pkg, g.Policy, now)
	if v.offer && v.grant {
		if why := s.cat.Load().hold(g, in.MachineID, pkg.Version, now); why != "" {
			v = verdict{reason: why, state: store.StateOnHold}
		} else if s.holds.held(g.ID, now) {
			v = verdict{reason: reasonRateLimited, state: store.StateOnHold}
		} else {
			cand := *in
			cand.State, cand.GrantedVersion, cand.GrantedAt = store.StateGranted, pkg.Version, now
			cand.InstalledAt, cand.FailedAt = time.Time{}, time.Time{}
			start := time.Now()
			res, err := s.rec.grant(ctx, cand)
			s.m.observeDB("grant", start)
			if err != nil {
				return err
			}
			if !res.OK {
				v = verdict{reason: res.Reason, state: store.StateOnHold}
				if res.Reason == reasonRateLimited {
					s.holds.hold(g.ID, now.Add(holdFor))
				}
			} else {
				*in = cand
				s.m.granted.Inc()
				s.log.Debug("granted update", "app", in.AppID, "machine", in.MachineID, "group", g.Name,
					"from", in.Version, "to", pkg.Version, "active", res.Active+1)
			}
		}
	}
	if !v.offer {
		in.State = v.state
		ra.AddUpdateCheck(omaha.StatusNoUpdate)
		s.m.checks.WithLabelValues(string(omaha.StatusNoUpdate), v.reason).Inc()
		return nil
	}
	if !v.grant && !inProgress(in.State) {
		in.State = store.StateGranted // offered again under the grant it holds
	}
	_, err := ra.AddUpdate(omaha.Update{
		Version: pkg.Version, URLs: s.codebases(r, ch, pe), PackageName: pe.FileName,
		Size: pe.Size, SHA256: pe.sha256, SHA1: pe.sha1, Extras: pe.extras,
		DisablePayloadBackoff: g.Policy.DisablePayloadBackoff,
	})
	if err != nil {
		return err
	}
	s.m.checks.WithLabelValues(string(omaha.StatusOK), "").Inc()
	return nil
}

// codebases returns where a host downloads p, in order of preference: the package's own
// external URL; else the channel's external base URL (templated) and this server.
func (s *Server) codebases(r *http.Request, ch *channelEntry, p *pkgEntry) []string {
	if p.URL != "" {
		return []string{strings.TrimSuffix(p.URL, p.FileName)}
	}
	var urls []string
	if ch.ExternalURL != "" {
		urls = append(urls, strings.NewReplacer("{board}", p.Board, "{version}", p.Version, "{sha256}", p.SHA256).Replace(ch.ExternalURL))
	}
	return append(urls, s.baseURL(r)+"/packages/"+p.SHA256+"/")
}

// baseURL is the server's URL as hosts reach it.
func (s *Server) baseURL(r *http.Request) string {
	if s.publicURL != "" {
		return s.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
