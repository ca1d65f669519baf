package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// Enrollment: an agent exchanges an enrollment token for a host credential (POST /v1/enroll),
// then sends "Authorization: Bearer ts-host-…" with every Omaha request. A group whose policy
// requires enrollment serves only hosts whose credential matches the machine id (and app, and
// group when the token named one) of each <app> of the request.

const (
	// maxEnrollBytes caps a /v1/enroll request body.
	maxEnrollBytes = 4 << 10
	// credRecheck is how long a machine whose presented credential matched nothing is not looked
	// up in the database again (a replica may have enrolled it since this one last looked).
	credRecheck = time.Second
	// maxCredMisses bounds the remembered misses; when full they are forgotten at once.
	maxCredMisses = 100_000
)

// reasonNotEnrolled answers a host without a valid credential in a group requiring enrollment.
const reasonNotEnrolled = "not-enrolled"

// credEntry is a cached host credential: the SHA-256 of its secret and its group ("" = any).
type credEntry struct {
	hash  [32]byte
	group string
}

// hostCreds caches every host credential (loaded at start, added by enrollments, refreshed
// from the database when a presented credential does not match), so that a check-in in a group
// requiring enrollment costs a hash and a map lookup.
type hostCreds struct {
	mu      sync.RWMutex
	m       map[instKey]credEntry
	misses  map[instKey]time.Time // machines looked up and not matched, and when
	version int64                 // the store's CredentialsVersion m was loaded at
}

func entryOf(hc store.HostCredential) credEntry {
	e := credEntry{group: hc.GroupID}
	if b, err := hex.DecodeString(hc.Hash); err == nil && len(b) == len(e.hash) {
		copy(e.hash[:], b)
	}
	return e
}

func (c *hostCreds) put(hc store.HostCredential) {
	k := instKey{hc.AppID, hc.MachineID}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[instKey]credEntry{}
	}
	c.m[k] = entryOf(hc)
	delete(c.misses, k)
}

func (c *hostCreds) remove(k instKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// replace swaps in a whole new set of credentials, loaded at version.
func (c *hostCreds) replace(m map[instKey]credEntry, version int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.version = m, version
}

func (c *hostCreds) loadedAt() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

func (c *hostCreds) get(k instKey) (credEntry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[k]
	return e, ok
}

// recheck reports whether k may be looked up in the database now, and records that it is.
func (c *hostCreds) recheck(k instKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.misses[k]; ok && now.Sub(at) < credRecheck && now.Sub(at) >= 0 {
		return false
	}
	if c.misses == nil || len(c.misses) >= maxCredMisses {
		c.misses = map[instKey]time.Time{}
	}
	c.misses[k] = now
	return true
}

// reloadCredentials loads every host credential again when a credential was deleted or
// replaced (here or through another server sharing the database) since the last load, or when
// force is set. A credential enrolled meanwhile and missed by the load is read again at its
// host's next check.
func (s *Server) reloadCredentials(ctx context.Context, force bool) error {
	v, err := s.db.CredentialsVersion(ctx)
	if err != nil {
		return err
	}
	if !force && v == s.creds.loadedAt() {
		return nil
	}
	m := map[instKey]credEntry{}
	start := time.Now()
	err = s.db.EachHostCredential(ctx, func(hc store.HostCredential) { m[instKey{hc.AppID, hc.MachineID}] = entryOf(hc) })
	s.m.observeDB("load_credentials", start)
	if err != nil {
		return fmt.Errorf("server: load host credentials: %w", err)
	}
	s.creds.replace(m, v)
	return nil
}

// hostCredential returns the host credential a request presents ("" if none).
func hostCredential(r *http.Request) string {
	t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	t = strings.TrimSpace(t)
	if len(t) > store.MaxTokenLen || !strings.HasPrefix(t, store.CredentialPrefix) {
		return ""
	}
	return t
}

// trust is what a request's credential proves about one <app> of it.
type trust struct {
	trusted  bool // serve it as today: offers, grants, failures count
	enrolled bool // the machine id has a credential (whether or not this request proved it)
}

// trustOf judges one <app> of a request in group g: cred is the credential the request
// presented, flatcar whether it came from update_engine.
func (s *Server) trustOf(ctx context.Context, cred string, flatcar bool, app, machine string, g *store.Group, now time.Time) (trust, error) {
	if !g.Policy.RequireEnrollment {
		return trust{trusted: true}, nil
	}
	k := instKey{app, machine}
	e, ok := s.creds.get(k)
	var sum [32]byte
	if cred != "" {
		sum = sha256.Sum256([]byte(cred))
		if (!ok || subtle.ConstantTimeCompare(sum[:], e.hash[:]) != 1) && s.creds.recheck(k, now) {
			// Enrolled (again) through another replica since this one loaded it?
			start := time.Now()
			hc, err := s.db.HostCredential(ctx, app, machine)
			s.m.observeDB("read_credential", start)
			switch {
			case err == nil:
				s.creds.put(hc)
				e, ok = s.creds.get(k)
			case !errors.Is(err, store.ErrNotFound):
				return trust{}, err
			}
		}
	}
	t := trust{enrolled: ok}
	t.trusted = ok && cred != "" && subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1 && (e.group == "" || e.group == g.ID)
	if !t.trusted && cred == "" && flatcar && g.Policy.Anonymous == store.AnonymousFlatcar {
		t.trusted = true
	}
	return t, nil
}

// isFlatcar reports whether a request comes from update_engine (Flatcar, CoreOS), which cannot
// enroll. Anyone can claim to be one: Policy.Anonymous = flatcar trusts such claims.
func isFlatcar(req *omaha.Request) bool {
	return strings.HasPrefix(req.Version, "update_engine") || strings.HasPrefix(req.UpdaterVersion, "update_engine")
}

// handleEnroll serves POST /v1/enroll: a JSON omaha.EnrollRequest answered with an
// omaha.EnrollResponse carrying the host credential, or a JSON error that says what to do.
func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != mediaJSON {
		s.m.enrollments.WithLabelValues("bad-request").Inc()
		writeError(w, http.StatusUnsupportedMediaType, "enrollment needs 'Content-Type: "+mediaJSON+"'")
		return
	}
	var req omaha.EnrollRequest
	if err := decodeJSONLimit(w, r, &req, maxEnrollBytes); err != nil {
		s.m.enrollments.WithLabelValues("bad-request").Inc()
		s.fail(w, r, err)
		return
	}
	if err := omaha.CheckMachineID(req.MachineID); err != nil {
		s.m.enrollments.WithLabelValues("bad-request").Inc()
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	app := ""
	if req.AppID != "" {
		id, err := omaha.ParseAppID(req.AppID)
		if err != nil {
			s.m.enrollments.WithLabelValues("bad-request").Inc()
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		app = id
	}
	now := s.now()
	secret, hc, err := s.db.Enroll(r.Context(), req.Token, app, req.MachineID, now)
	if errors.Is(err, store.ErrEnrollRefused) {
		s.m.enrollments.WithLabelValues("refused").Inc()
		s.log.Warn("enrollment refused", "machine", req.MachineID, "remote", remoteHost(r), "err", err)
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	if err != nil {
		s.m.enrollments.WithLabelValues("error").Inc()
		s.fail(w, r, err)
		return
	}
	s.creds.put(hc)
	s.m.enrollments.WithLabelValues("enrolled").Inc()
	n := &auditNote{}
	n.setTarget(hc.AppID, "hosts", hc.MachineID)
	n.add("token", hc.TokenID)
	if hc.GroupID != "" {
		n.add("group_id", hc.GroupID)
	}
	s.audit(r.Context(), store.AuditEntry{At: now, TokenID: hc.TokenID, Who: "enrollment token " + hc.TokenID, Remote: remoteHost(r),
		Action: "host.enroll", Target: n.target, Detail: auditDetail(r, &bodyRecorder{}, n)})
	writeJSON(w, http.StatusOK, omaha.EnrollResponse{AppID: hc.AppID, MachineID: hc.MachineID, GroupID: hc.GroupID, Credential: secret})
}

// Admin API for enrollment tokens and host credentials.

// unenrollHost serves DELETE /api/v1/apps/{app}/hosts/{machine}/credential.
func (s *Server) unenrollHost(w http.ResponseWriter, r *http.Request) (any, error) {
	id, m, err := machineParam(r)
	if err != nil {
		return nil, err
	}
	noteOf(r).setTarget(id, "hosts", m)
	hc, err := s.db.UnenrollHost(r.Context(), id, m)
	if err != nil {
		return nil, err
	}
	s.creds.remove(instKey{id, m})
	return admin.HostCredential{AppID: hc.AppID, MachineID: hc.MachineID, GroupID: hc.GroupID, TokenID: hc.TokenID, Enrolled: hc.Enrolled}, nil
}

func toEnrollToken(t store.EnrollToken) admin.EnrollToken {
	return admin.EnrollToken{ID: t.ID, AppID: t.AppID, GroupID: t.GroupID, Name: t.Name, MaxUses: t.MaxUses, Uses: t.Uses,
		Expires: t.Expires, Revoked: t.Revoked, Created: t.Created}
}

// createEnrollToken serves POST /api/v1/apps/{app}/enroll-tokens.
func (s *Server) createEnrollToken(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var c admin.EnrollTokenCreate
	if err := decodeJSON(w, r, &c); err != nil {
		return nil, err
	}
	if c.ExpiresIn < 0 {
		return nil, badRequest("expires_in %s is negative: give a duration such as 24h, or 0 for a token that never expires", time.Duration(c.ExpiresIn))
	}
	t := store.EnrollToken{AppID: id, Name: c.Name, MaxUses: c.MaxUses}
	if c.Group != "" {
		g, err := s.findGroup(r, id, c.Group)
		if err != nil {
			return nil, err
		}
		t.GroupID = g.ID
	}
	now := s.now()
	if c.ExpiresIn > 0 {
		t.Expires = now.Add(time.Duration(c.ExpiresIn))
	}
	secret, t, err := s.db.CreateEnrollToken(r.Context(), t, now)
	if err != nil {
		return nil, err
	}
	n := noteOf(r)
	n.setTarget(id, "enroll-tokens", t.ID)
	return admin.EnrollTokenCreated{EnrollToken: toEnrollToken(t), Secret: secret}, nil
}

// listEnrollTokens serves GET /api/v1/apps/{app}/enroll-tokens.
func (s *Server) listEnrollTokens(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.App(r.Context(), id); err != nil {
		return nil, err
	}
	ts, err := s.db.EnrollTokens(r.Context(), id)
	out := []admin.EnrollToken{}
	for _, t := range ts {
		out = append(out, toEnrollToken(t))
	}
	return out, err
}

// revokeEnrollToken serves DELETE /api/v1/apps/{app}/enroll-tokens/{token}.
func (s *Server) revokeEnrollToken(w http.ResponseWriter, r *http.Request) (any, error) {
	id, err := appParam(r)
	if err != nil {
		return nil, err
	}
	noteOf(r).setTarget(id, "enroll-tokens", r.PathValue("token"))
	t, err := s.db.RevokeEnrollToken(r.Context(), id, r.PathValue("token"), s.now())
	return toEnrollToken(t), err
}
