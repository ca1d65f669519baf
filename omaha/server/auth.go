package server

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/twinslot/twinslot/omaha/store"
)

type tokenKey struct{}

// Media types a change may carry: JSON for every change but the uploads of payload and Flatcar
// files, which send the file itself.
const (
	mediaJSON   = "application/json"
	mediaOctets = "application/octet-stream"
)

// credentials returns the token of a request and whether it came as the password of HTTP Basic
// authentication (so that a browser can open the dashboard) rather than "Authorization: Bearer T".
func credentials(r *http.Request) (secret string, basic bool) {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t), false
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw, true
	}
	return "", false
}

// auth lets a request through when it carries a token with at least role. A change (role
// admin) must come with a bearer token, never Basic credentials, and with a body of media type
// media: a browser sends Basic credentials it remembers along with any cross-site form, but it
// cannot add an Authorization header to one, nor send a JSON or octet-stream body without the
// server's CORS consent (which omahad never gives). So a page an operator visits cannot change
// anything.
func (s *Server) auth(role store.Role, media string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, basic := credentials(r)
		if secret == "" {
			s.unauthorized(w, r, "no token: send 'Authorization: Bearer <token>' (create one with 'omahad token create')")
			return
		}
		if role == store.RoleAdmin && basic {
			s.unauthorized(w, r, "changes need 'Authorization: Bearer <token>': Basic credentials are accepted only for reads")
			return
		}
		tok, err := s.db.Authenticate(r.Context(), secret)
		if errors.Is(err, store.ErrNotFound) {
			s.unauthorized(w, r, "unknown or revoked token")
			return
		}
		if err != nil {
			s.log.Error("check token", "err", err)
			writeError(w, http.StatusInternalServerError, "internal error checking the token; see the server log")
			return
		}
		if role == store.RoleAdmin && tok.Role != store.RoleAdmin {
			writeError(w, http.StatusForbidden, "this token is read-only; use an admin token for changes")
			return
		}
		if media != "" {
			if got, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || got != media {
				writeError(w, http.StatusUnsupportedMediaType, "this change needs 'Content-Type: "+media+"'")
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok)))
	})
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="omahad"`)
	} else {
		w.Header().Set("WWW-Authenticate", `Basic realm="omahad (any user name, token as password)"`)
	}
	writeError(w, http.StatusUnauthorized, msg)
}

// tokenOf returns the token that authenticated a request.
func tokenOf(ctx context.Context) store.Token {
	t, _ := ctx.Value(tokenKey{}).(store.Token)
	return t
}
