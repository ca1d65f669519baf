package server

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/twinslot/twinslot/omaha/store"
)

type tokenKey struct{}

// bearer returns the token of a request: "Authorization: Bearer T", or the password of HTTP
// Basic authentication (so a browser can open the dashboard).
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return ""
}

// auth lets a request through when it carries a token with at least role.
func (s *Server) auth(role store.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret := bearer(r)
		if secret == "" {
			s.unauthorized(w, r, "no token: send 'Authorization: Bearer <token>' (create one with 'omahad token create')")
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
