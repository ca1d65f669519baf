package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
)

// apiError is an error with the status code and message the client sees.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, admin.ErrorBody{Error: msg})
}

// fail writes err with the status code its kind calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	var mbe *http.MaxBytesError
	var fe *omaha.FieldError
	switch ge, refused := store.IsGateError(err); {
	case refused:
		writeJSON(w, http.StatusConflict, admin.ErrorBody{Error: ge.Error(), Gates: toGateChecks(ge.Checks)})
	case errors.As(err, &ae):
		writeError(w, ae.code, ae.msg)
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, store.ErrInvalid), errors.As(err, &fe):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		if _, ok := payload.IsRejection(err); ok {
			writeError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		if r.Context().Err() != nil {
			return // the client went away
		}
		s.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error; see the server log")
	}
}

// api wraps an admin handler that only reads: authentication (a bearer token, or Basic
// credentials so that a browser can fetch it), JSON answer, error mapping. Changes use change.
func (s *Server) api(h func(w http.ResponseWriter, r *http.Request) (any, error)) http.Handler {
	return s.auth(store.RoleReadOnly, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := h(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}))
}

func (s *Server) adminRoutes(mux *http.ServeMux) {
	js, octets := mediaJSON, mediaOctets
	mux.Handle("GET /api/v1/apps", s.api(s.listApps))
	mux.Handle("POST /api/v1/apps", s.change("app.create", js, s.createApp))
	mux.Handle("GET /api/v1/apps/{app}", s.api(s.getApp))
	mux.Handle("PUT /api/v1/apps/{app}/trust", s.change("app.set-trust", js, s.setTrust))
	mux.Handle("GET /api/v1/apps/{app}/channels", s.api(s.listChannels))
	mux.Handle("PUT /api/v1/apps/{app}/channels/{channel}", s.change("channel.update", js, s.setChannel))
	mux.Handle("GET /api/v1/apps/{app}/packages", s.api(s.listPackages))
	mux.Handle("POST /api/v1/apps/{app}/packages", s.change("package.publish", octets, s.publish))
	mux.Handle("POST /api/v1/apps/{app}/files", s.change("file.upload", octets, s.uploadFile))
	mux.Handle("POST /api/v1/apps/{app}/flatcar", s.change("flatcar.publish", js, s.publishFlatcar))
	mux.Handle("POST /api/v1/apps/{app}/promote", s.change("promote", js, s.promote))
	mux.Handle("GET /api/v1/apps/{app}/gates", s.api(s.listGates))
	mux.Handle("PUT /api/v1/apps/{app}/channels/{channel}/gate", s.change("gate.set", js, s.setGate))
	mux.Handle("DELETE /api/v1/apps/{app}/channels/{channel}/gate", s.change("gate.delete", js, s.deleteGate))
	mux.Handle("GET /api/v1/apps/{app}/gate-check", s.api(s.gateCheck))
	mux.Handle("POST /api/v1/apps/{app}/withdraw", s.change("withdraw", js, s.withdraw))
	mux.Handle("GET /api/v1/apps/{app}/groups", s.api(s.listGroups))
	mux.Handle("POST /api/v1/apps/{app}/groups", s.change("group.create", js, s.createGroup))
	mux.Handle("GET /api/v1/apps/{app}/groups/{group}", s.api(s.getGroup))
	mux.Handle("PATCH /api/v1/apps/{app}/groups/{group}", s.change("group.update", js, s.updateGroup))
	mux.Handle("GET /api/v1/apps/{app}/instances", s.api(s.listInstances))
	mux.Handle("GET /api/v1/apps/{app}/instances/{machine}", s.api(s.getInstance))
	mux.Handle("GET /api/v1/apps/{app}/instances/{machine}/events", s.api(s.machineEvents))
	mux.Handle("GET /api/v1/apps/{app}/history", s.api(s.history))
	mux.Handle("GET /api/v1/apps/{app}/events", s.api(s.listEvents))
	mux.Handle("GET /api/v1/apps/{app}/status", s.api(s.status))
	mux.Handle("GET /api/v1/audit", s.api(s.listAudit))
	mux.Handle("GET /api/v1/apps/{app}/enroll-tokens", s.api(s.listEnrollTokens))
	mux.Handle("POST /api/v1/apps/{app}/enroll-tokens", s.change("enroll-token.create", js, s.createEnrollToken))
	mux.Handle("DELETE /api/v1/apps/{app}/enroll-tokens/{token}", s.change("enroll-token.revoke", js, s.revokeEnrollToken))
	mux.Handle("DELETE /api/v1/apps/{app}/hosts/{machine}/credential", s.change("host.unenroll", js, s.unenrollHost))
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	}))
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONLimit(w, r, v, maxJSONBytes)
}

// decodeJSONLimit decodes a JSON body of at most limit bytes into v, refusing unknown fields.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("request body: %v", err)
	}
	return nil
}

// appParam returns the {app} path value as a bare lower-case UUID.
func appParam(r *http.Request) (string, error) {
	id, err := omaha.ParseAppID(r.PathValue("app"))
	if err != nil {
		return "", badRequest("app id %q is not a UUID", r.PathValue("app"))
	}
	return id, nil
}

// checkTrust parses a trust root so that only usable ones are stored.
func checkTrust(b []byte) error {
	if len(b) > store.MaxTrustLen {
		return badRequest("trust root larger than %d bytes", store.MaxTrustLen)
	}
	if _, err := payload.ParseTrustRoot(b); err != nil {
		return badRequest("trust root: %v", err)
	}
	return nil
}

func toApp(a store.App) admin.App {
	return admin.App{ID: a.ID, Name: a.Name, Trust: json.RawMessage(a.Trust), Created: a.Created}
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) (any, error) {
	apps, err := s.db.Apps(r.Context())
	out := []admin.App{}
	for _, a := range apps {
		out = append(out, toApp(a))
	}
	return out, err
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) (any, error) {
	var a admin.App
	if err := decodeJSON(w, r, &a); err != nil {
		return nil, err
	}
	id, err := omaha.ParseAppID(a.ID)
	if err != nil {
		return nil, badRequest("app id %q is not a UUID", a.ID)
	}
	// An app without a trust root holds only Flatcar packages until one is set.
	if len(a.Trust) > 0 {
		if err := checkTrust(a.Trust); err != nil {
			return nil, err
		}
	}
	noteOf(r).setTarget(id)
	if err := s.db.CreateApp(r.Context(), store.App{ID: id, Name: a.Name, Trust: a.Trust}, s.now()); err != nil {
		return nil, err
	}
	got, err := s.db.App(r.Context(), id)
	return toApp(got), err
}

func (s *Server) getApp(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	a, err := s.db.App(r.Context(), id)
	return toApp(a), err
}

func (s *Server) setTrust(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, store.MaxTrustLen))
	if err != nil {
		return nil, err
	}
	if err := checkTrust(b); err != nil {
		return nil, err
	}
	if err := s.db.SetTrust(r.Context(), id, b); err != nil {
		return nil, err
	}
	a, err := s.db.App(r.Context(), id)
	return toApp(a), err
}

func toPackage(p store.Package) admin.Package {
	out := admin.Package{ID: p.ID, AppID: p.AppID, Version: p.Version, Board: p.Board, SecurityVersion: p.SecurityVersion,
		FileName: p.FileName, Size: p.Size, SHA256: p.SHA256, SHA1: p.SHA1, URL: p.URL, Withdrawn: p.Withdrawn, Created: p.Created,
		Format: p.Format}
	for _, f := range p.Extras {
		out.Extras = append(out.Extras, admin.File{Name: f.Name, Size: f.Size, SHA256: f.SHA256, SHA1: f.SHA1})
	}
	return out
}

func toPackages(ps []store.Package) []admin.Package {
	out := []admin.Package{}
	for _, p := range ps {
		out = append(out, toPackage(p))
	}
	return out
}

func toChannel(c store.Channel) admin.Channel {
	out := admin.Channel{Name: c.Name, ExternalURL: c.ExternalURL, Packages: map[string]admin.Package{}}
	for b, p := range c.Packages {
		out.Packages[b] = toPackage(p)
	}
	return out
}

func (s *Server) listChannels(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	chs, err := s.db.Channels(r.Context(), id)
	out := []admin.Channel{}
	for _, c := range chs {
		out = append(out, toChannel(c))
	}
	return out, err
}

func (s *Server) setChannel(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var ch admin.ChannelChange
	if err := decodeJSON(w, r, &ch); err != nil {
		return nil, err
	}
	name := r.PathValue("channel")
	if err := s.db.SetChannelURL(r.Context(), id, name, ch.ExternalURL); err != nil {
		return nil, err
	}
	chs, err := s.db.Channels(r.Context(), id)
	for _, c := range chs {
		if c.Name == name {
			return toChannel(c), err
		}
	}
	return nil, err
}

func (s *Server) listPackages(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.App(r.Context(), id); err != nil {
		return nil, err
	}
	ps, err := s.db.Packages(r.Context(), id)
	return toPackages(ps), err
}

func (s *Server) withdraw(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var p admin.Withdraw
	if err := decodeJSON(w, r, &p); err != nil {
		return nil, err
	}
	noteOf(r).setTarget(id, "versions", p.Version)
	ps, err := s.db.Withdraw(r.Context(), id, p.Version)
	return toPackages(ps), err
}

func toPolicy(p store.Policy) admin.Policy {
	return admin.Policy{Enabled: p.Enabled, MaxUpdates: p.MaxUpdates, Period: admin.Duration(p.Period), UpdateTimeout: admin.Duration(p.UpdateTimeout),
		HaltOnFailures: p.HaltOnFailures, HaltedReason: p.HaltedReason, HaltedAt: p.HaltedAt, DisablePayloadBackoff: p.DisablePayloadBackoff,
		Waves: p.Waves, OfficeHours: p.OfficeHours,
		RequireEnrollment: p.RequireEnrollment, Anonymous: p.Anonymous, GrantStartTimeout: admin.Duration(p.GrantStartTimeout)}
}

func toGroup(g store.Group) admin.Group {
	return admin.Group{ID: g.ID, AppID: g.AppID, Name: g.Name, Channel: g.Channel, Default: g.Default(),
		Policy: toPolicy(g.Policy), Created: g.Created, Updated: g.Updated}
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.App(r.Context(), id); err != nil {
		return nil, err
	}
	gs, err := s.db.Groups(r.Context(), id)
	out := []admin.Group{}
	for _, g := range gs {
		out = append(out, toGroup(g))
	}
	return out, err
}

// findGroup resolves a group by id or name.
func (s *Server) findGroup(r *http.Request, app, ref string) (store.Group, error) {
	gs, err := s.db.Groups(r.Context(), app)
	if err != nil {
		return store.Group{}, err
	}
	for _, g := range gs {
		if g.ID == ref {
			return g, nil
		}
	}
	for _, g := range gs {
		if g.Name == ref {
			return g, nil
		}
	}
	return store.Group{}, fmt.Errorf("group %q of app %s: %w", ref, app, store.ErrNotFound)
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var g admin.Group
	if err := decodeJSON(w, r, &g); err != nil {
		return nil, err
	}
	p := g.Policy
	noteOf(r).setTarget(id, "groups", g.Name)
	sg, err := s.db.CreateGroup(r.Context(), store.Group{ID: g.ID, AppID: id, Name: g.Name, Channel: g.Channel, Policy: store.Policy{
		Enabled: p.Enabled, MaxUpdates: p.MaxUpdates, Period: time.Duration(p.Period), UpdateTimeout: time.Duration(p.UpdateTimeout),
		HaltOnFailures:        p.HaltOnFailures, // a halted reason is the server's to set, not the client's
		DisablePayloadBackoff: p.DisablePayloadBackoff,
		Waves:                 p.Waves, OfficeHours: p.OfficeHours,
		RequireEnrollment: p.RequireEnrollment, Anonymous: p.Anonymous, GrantStartTimeout: time.Duration(p.GrantStartTimeout),
	}}, s.now())
	return toGroup(sg), err
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	g, err := s.findGroup(r, id, r.PathValue("group"))
	return toGroup(g), err
}

func (s *Server) updateGroup(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var ch admin.GroupChange
	if err := decodeJSON(w, r, &ch); err != nil {
		return nil, err
	}
	g, err := s.findGroup(r, id, r.PathValue("group"))
	if err != nil {
		return nil, err
	}
	noteOf(r).setTarget(id, "groups", g.Name)
	g, err = s.db.UpdateGroup(r.Context(), id, g.ID, func(g *store.Group) {
		apply(&g.Channel, ch.Channel)
		p := &g.Policy
		apply(&p.Enabled, ch.Enabled)
		apply(&p.MaxUpdates, ch.MaxUpdates)
		applyDuration(&p.Period, ch.Period)
		applyDuration(&p.UpdateTimeout, ch.UpdateTimeout)
		apply(&p.HaltOnFailures, ch.HaltOnFailures)
		apply(&p.DisablePayloadBackoff, ch.DisablePayloadBackoff)
		apply(&p.Waves, ch.Waves)
		apply(&p.OfficeHours, ch.OfficeHours)
		apply(&p.RequireEnrollment, ch.RequireEnrollment)
		apply(&p.Anonymous, ch.Anonymous)
		applyDuration(&p.GrantStartTimeout, ch.GrantStartTimeout)
	}, s.now())
	return toGroup(g), err
}

// apply sets *dst to *change when a group change names the field (non-nil).
func apply[T any](dst *T, change *T) {
	if change != nil {
		*dst = *change
	}
}

// applyDuration is apply for a duration of the admin API.
func applyDuration(dst *time.Duration, change *admin.Duration) {
	if change != nil {
		*dst = time.Duration(*change)
	}
}

func (s *Server) toInstance(in store.Instance) admin.Instance {
	out := admin.Instance{MachineID: in.MachineID, Alias: in.Alias, GroupID: in.GroupID, Track: in.Track, Version: in.Version,
		Board: in.Board, OEM: in.OEM, BootID: in.BootID, State: string(in.State), LastError: in.LastError,
		FirstSeen: in.FirstSeen, LastCheck: in.LastCheck, GrantedVersion: in.GrantedVersion, GrantedAt: in.GrantedAt,
		InstalledAt: in.InstalledAt, FailedAt: in.FailedAt, RollbackVersion: in.RollbackVersion}
	if a := s.cat.Load().apps[in.AppID]; a != nil {
		if g := a.byID[in.GroupID]; g != nil {
			out.Group = g.Name
		}
	}
	return out
}

// limitParam reads ?limit=.
func limitParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > store.MaxLimit {
		return 0, badRequest("limit %q: want 0..%d", v, store.MaxLimit)
	}
	return n, nil
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	n, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	f := store.InstanceFilter{AppID: id, Version: q.Get("version"), State: store.State(q.Get("state")), Search: q.Get("q"), After: q.Get("after"), Limit: n}
	if ref := q.Get("group"); ref != "" {
		g, err := s.findGroup(r, id, ref)
		if err != nil {
			return nil, err
		}
		f.GroupID = g.ID
	}
	ins, err := s.db.Instances(r.Context(), f)
	out := []admin.Instance{}
	for _, in := range ins {
		out = append(out, s.toInstance(in))
	}
	return out, err
}

func toEvent(e store.Event) admin.Event {
	desc := omaha.EventType(e.Type).String() + ": " + omaha.EventResult(e.Result).String()
	if e.ErrorCode != 0 || e.Result == int(omaha.EventResultError) {
		desc += " (" + omaha.ErrorCode(uint32(e.ErrorCode)).String() + ")"
	}
	return admin.Event{ID: e.ID, MachineID: e.MachineID, GroupID: e.GroupID, Type: e.Type, Result: e.Result, ErrorCode: e.ErrorCode,
		Description: desc, Version: e.Version, PreviousVersion: e.PreviousVersion, TargetVersion: e.TargetVersion, At: e.At}
}

func (s *Server) events(r *http.Request, f store.EventFilter) (any, error) {
	n, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	f.Limit = n
	evs, err := s.db.Events(r.Context(), f)
	out := []admin.Event{}
	for _, e := range evs {
		out = append(out, toEvent(e))
	}
	return out, err
}

// machineParam returns the app and machine id of a route under /apps/{app}/…/{machine}.
func machineParam(r *http.Request) (app, machine string, err error) {
	if app, err = appParam(r); err != nil {
		return "", "", err
	}
	machine = r.PathValue("machine")
	if err := omaha.CheckMachineID(machine); err != nil {
		return "", "", badRequest("%v", err)
	}
	return app, machine, nil
}

func (s *Server) machineEvents(w http.ResponseWriter, r *http.Request) (any, error) {
	id, m, err := machineParam(r)
	if err != nil {
		return nil, err
	}
	return s.events(r, store.EventFilter{AppID: id, MachineID: m})
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	return s.events(r, store.EventFilter{AppID: id, Failures: r.URL.Query().Get("failures") != ""})
}

// appStatus gathers an app's channels and per-group counts and failures.
func (s *Server) appStatus(r *http.Request, id string) (admin.Status, error) {
	ctx := r.Context()
	a, err := s.db.App(ctx, id)
	if err != nil {
		return admin.Status{}, err
	}
	st := admin.Status{App: toApp(a), Channels: []admin.Channel{}, Groups: []admin.GroupStatus{}}
	st.App.Trust = nil
	chs, err := s.db.Channels(ctx, id)
	if err != nil {
		return st, err
	}
	for _, c := range chs {
		st.Channels = append(st.Channels, toChannel(c))
	}
	gs, err := s.db.Groups(ctx, id)
	if err != nil {
		return st, err
	}
	counts, err := s.db.Counts(ctx, id)
	if err != nil {
		return st, err
	}
	fails, err := s.db.FailureCounts(ctx, id)
	if err != nil {
		return st, err
	}
	for _, g := range gs {
		gst := admin.GroupStatus{Group: toGroup(g)}
		gst.Counts = ofGroup(counts, g.ID, func(c store.Count) (string, admin.Count) {
			return c.GroupID, admin.Count{Version: c.Version, State: string(c.State), N: c.N}
		})
		for _, c := range gst.Counts {
			gst.Instances += c.N
		}
		if fs := ofGroup(fails, g.ID, func(f store.Failures) (string, admin.Failures) {
			return f.GroupID, admin.Failures{TargetVersion: f.TargetVersion, Failed: f.Failed, RolledBack: f.RolledBack}
		}); len(fs) > 0 {
			gst.Failures = fs
		}
		gst.Rollout = s.rolloutStatus(g, s.now())
		st.Groups = append(st.Groups, gst)
	}
	return st, nil
}

// ofGroup converts the rows of rows that belong to group id (conv returns a row's group and
// its conversion), in order; never nil, so that JSON says [] rather than null.
func ofGroup[T, U any](rows []T, id string, conv func(T) (string, U)) []U {
	out := []U{}
	for _, r := range rows {
		if g, u := conv(r); g == id {
			out = append(out, u)
		}
	}
	return out
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	return s.appStatus(r, id)
}
