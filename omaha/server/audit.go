package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// auditBodyMax is the largest request body the audit log keeps verbatim (compacted JSON);
// larger bodies and file uploads are recorded by size and SHA-256.
const auditBodyMax = 1024

// auditPage is how many audit entries a page holds when the client does not say.
const auditPage = 100

// auditNote is what a change handler tells the audit log beyond the request: a more precise
// target than the one the route gives, and extra facts (a forced promotion's failed gates).
type auditNote struct {
	target string
	extra  map[string]any
}

type noteKey struct{}

// noteOf returns the audit note of a change request (a throw-away one outside a change).
func noteOf(r *http.Request) *auditNote {
	if n, ok := r.Context().Value(noteKey{}).(*auditNote); ok {
		return n
	}
	return &auditNote{}
}

// setTarget names what a change changed, below its app: noteOf(r).setTarget(app, "channels", "stable").
func (n *auditNote) setTarget(app string, rest ...string) {
	n.target = "apps/" + app
	for _, s := range rest {
		n.target += "/" + s
	}
}

func (n *auditNote) add(k string, v any) {
	if n.extra == nil {
		n.extra = map[string]any{}
	}
	n.extra[k] = v
}

// bodyRecorder counts and hashes a request body as the handler reads it, and keeps its start.
type bodyRecorder struct {
	io.ReadCloser
	n    int64
	h    hash.Hash
	head bytes.Buffer
}

func (b *bodyRecorder) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	b.h.Write(p[:n])
	if room := auditBodyMax + 1 - b.head.Len(); room > 0 {
		b.head.Write(p[:min(n, room)])
	}
	return n, err
}

// defaultTarget is "apps/<app>[/channels/<c>|/groups/<g>]" from the route's path values.
func defaultTarget(r *http.Request) string {
	app := r.PathValue("app")
	if app == "" {
		return ""
	}
	n := &auditNote{}
	switch {
	case r.PathValue("channel") != "":
		n.setTarget(app, "channels", r.PathValue("channel"))
	case r.PathValue("group") != "":
		n.setTarget(app, "groups", r.PathValue("group"))
	default:
		n.setTarget(app)
	}
	return n.target
}

// auditDetail is the short JSON of a change: the request body when it is small JSON (else its
// size and SHA-256), the query parameters, and what the handler added.
func auditDetail(r *http.Request, body *bodyRecorder, n *auditNote) json.RawMessage {
	d := map[string]any{}
	for k, v := range n.extra {
		d[k] = v
	}
	if q := r.URL.Query(); len(q) > 0 {
		flat := map[string]string{}
		for k := range q {
			flat[k] = q.Get(k)
		}
		d["query"] = flat
	}
	var compact bytes.Buffer
	switch {
	case body.n == 0:
	case body.n <= auditBodyMax && json.Compact(&compact, body.head.Bytes()) == nil:
		d["request"] = json.RawMessage(compact.Bytes())
	default:
		d["bytes"] = body.n
		d["sha256"] = hex.EncodeToString(body.h.Sum(nil))
	}
	b, err := json.Marshal(d)
	if err != nil || len(b) > store.MaxAuditDetail {
		delete(d, "request")
		delete(d, "query")
		d["truncated"] = true
		b, _ = json.Marshal(d)
	}
	return b
}

// describe adds to the note what a change created: the package or file it answers with.
func describe(n *auditNote, v any) {
	switch x := v.(type) {
	case admin.Package:
		n.add("package", map[string]any{"id": x.ID, "version": x.Version, "board": x.Board, "format": x.Format, "sha256": x.SHA256})
	case admin.File:
		n.add("file", map[string]any{"size": x.Size, "sha256": x.SHA256})
	}
}

// remoteHost is the address of the client, without the port.
func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// change wraps an admin handler that changes something: authentication with an admin bearer
// token, a body of media type media, JSON answer, error mapping, a reload of this process's
// catalog, and an audit log entry naming action once the change succeeded.
func (s *Server) change(action, media string, h func(w http.ResponseWriter, r *http.Request) (any, error)) http.Handler {
	return s.auth(store.RoleAdmin, media, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		note := &auditNote{target: defaultTarget(r)}
		body := &bodyRecorder{ReadCloser: r.Body, h: sha256.New()}
		r.Body = body
		r = r.WithContext(context.WithValue(r.Context(), noteKey{}, note))
		v, err := h(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		describe(note, v)
		if err := s.refresh(r.Context(), true); err != nil {
			s.log.Warn("reload catalog after a change", "err", err)
		}
		tok := tokenOf(r.Context())
		e := store.AuditEntry{At: s.now(), TokenID: tok.ID, Who: tok.Name, Remote: remoteHost(r), Action: action,
			Target: note.target, Detail: auditDetail(r, body, note)}
		if e.Who == "" {
			e.Who = "token " + tok.ID
		}
		s.audit(r.Context(), e)
		writeJSON(w, http.StatusOK, v)
	}))
}

// audit records a change; the change is done, so a failure to record it is logged, loudly.
func (s *Server) audit(ctx context.Context, e store.AuditEntry) {
	s.log.Info("admin change", "action", e.Action, "target", e.Target, "who", e.Who, "token", e.TokenID, "remote", e.Remote)
	if _, err := s.db.AddAudit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("record audit entry: the change was made but is missing from the audit log",
			"action", e.Action, "target", e.Target, "who", e.Who, "detail", string(e.Detail), "err", err)
	}
}

func toAuditEntry(e store.AuditEntry) admin.AuditEntry {
	return admin.AuditEntry{ID: e.ID, At: e.At, Who: e.Who, TokenID: e.TokenID, Remote: e.Remote, Action: e.Action, Target: e.Target, Detail: e.Detail}
}

// timeParam reads an RFC 3339 time from the query.
func timeParam(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("%s %q: want an RFC 3339 time such as 2026-12-05T12:00:00Z", name, v)
	}
	return t, nil
}

// listAudit serves GET /api/v1/audit?since=&until=&target=&before=&limit=.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) (any, error) {
	var f store.AuditFilter
	var err error
	if f.Since, err = timeParam(r, "since"); err != nil {
		return nil, err
	}
	if f.Until, err = timeParam(r, "until"); err != nil {
		return nil, err
	}
	if f.Limit, err = limitParam(r); err != nil {
		return nil, err
	}
	if f.Limit == 0 {
		f.Limit = auditPage
	}
	f.Target = r.URL.Query().Get("target")
	if len(f.Target) > store.MaxAuditTarget {
		return nil, badRequest("target longer than %d bytes", store.MaxAuditTarget)
	}
	if v := r.URL.Query().Get("before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before <= 0 {
			return nil, badRequest("before %q: want the positive id a previous page gave as next", v)
		}
	}
	es, err := s.db.Audit(r.Context(), f)
	page := admin.AuditPage{Entries: []admin.AuditEntry{}}
	for _, e := range es {
		page.Entries = append(page.Entries, toAuditEntry(e))
	}
	if len(es) == f.Limit && len(es) > 0 {
		page.Next = es[len(es)-1].ID
	}
	return page, err
}
