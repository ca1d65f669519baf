package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/locksmith"
)

// Protocol constants.
const (
	HeaderName        = "fleet-lock-protocol"
	PathPreReboot     = "/v1/pre-reboot"
	PathSteadyState   = "/v1/steady-state"
	MaxRequestBody    = 4 << 10
	MaxResponseBody   = 64 << 10
	MaxGroupLen       = locksmith.MaxGroupLen
	DefaultGroup      = locksmith.DefaultGroup
	retryAfterFull    = 60 * time.Second
	retryAfterBackend = 10 * time.Second
	// backendTimeout bounds one etcd operation of a request.
	backendTimeout = 10 * time.Second
)

// Error kinds (the "kind" of an error body).
const (
	KindInvalidHeader      = "invalid_fleet_lock_header"
	KindInvalidBody        = "invalid_request_body"
	KindInvalidID          = "invalid_client_id"
	KindInvalidGroup       = "invalid_group"
	KindNotFound           = "not_found"
	KindMethodNotAllowed   = "method_not_allowed"
	KindSemaphoreFull      = "failed_lock_semaphore_full"
	KindTooLarge           = "request_too_large"
	KindBackendUnavailable = "backend_unavailable"
	KindInternal           = "internal_error"
)

var groupRE = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

// Params are a request's client_params.
type Params struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

// Request is a FleetLock request body.
type Request struct {
	ClientParams *Params `json:"client_params"`
}

// Error is a FleetLock error: the HTTP status and the JSON body. Client calls return it too.
type Error struct {
	Status int    `json:"-"`
	Kind   string `json:"kind"`
	Value  string `json:"value"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("fleetlock: %d %s: %s", e.Status, e.Kind, e.Value)
}

// Full reports whether the error says every slot is taken (try again later).
func (e *Error) Full() bool {
	return e.Kind == KindSemaphoreFull || e.Status == http.StatusConflict || e.Status == http.StatusLocked
}

// ParseRequest checks the protocol header and decodes and validates a request body.
func ParseRequest(h http.Header, body []byte) (Params, *Error) {
	if h.Get(HeaderName) != "true" {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidHeader, fmt.Sprintf("header %q must be \"true\"", HeaderName)}
	}
	if len(body) > MaxRequestBody {
		return Params{}, &Error{http.StatusRequestEntityTooLarge, KindTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxRequestBody)}
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidBody, "body is not JSON: " + err.Error()}
	}
	if dec.More() {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidBody, "body holds more than one JSON value"}
	}
	if req.ClientParams == nil {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidBody, `body has no "client_params" object`}
	}
	p := *req.ClientParams
	if err := locksmith.ValidateID(p.ID); err != nil {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidID, err.Error()}
	}
	if len(p.Group) > MaxGroupLen || !groupRE.MatchString(p.Group) {
		return Params{}, &Error{http.StatusBadRequest, KindInvalidGroup, fmt.Sprintf("group must match %s and be at most %d bytes", groupRE, MaxGroupLen)}
	}
	return p, nil
}

// Semaphore is the lock the server serves; *locksmith.Store is one.
type Semaphore interface {
	TryLock(ctx context.Context, group string, h locksmith.Holder) (locksmith.Lock, error)
	Unlock(ctx context.Context, group, requester, target string, force bool) (locksmith.Holder, error)
}

// Server serves FleetLock on a semaphore.
type Server struct {
	// Timeout bounds the semaphore operation of one request; past it the answer is 503.
	Timeout time.Duration

	sem Semaphore
	log *slog.Logger
}

// NewServer returns a FleetLock handler over sem.
func NewServer(sem Semaphore, log *slog.Logger) *Server {
	return &Server{Timeout: backendTimeout, sem: sem, log: log}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != PathPreReboot && r.URL.Path != PathSteadyState {
		writeError(w, &Error{http.StatusNotFound, KindNotFound, "FleetLock serves POST " + PathPreReboot + " and " + PathSteadyState})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, &Error{http.StatusMethodNotAllowed, KindMethodNotAllowed, "use POST"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, &Error{http.StatusRequestEntityTooLarge, KindTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxRequestBody)})
		return
	}
	if err != nil {
		writeError(w, &Error{http.StatusBadRequest, KindInvalidBody, "read body: " + err.Error()})
		return
	}
	p, perr := ParseRequest(r.Header, body)
	if perr != nil {
		writeError(w, perr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.Timeout)
	defer cancel()
	if r.URL.Path == PathPreReboot {
		lk, err := s.sem.TryLock(ctx, p.Group, locksmith.Holder{ID: p.ID, Note: "fleetlock"})
		if err != nil {
			s.fail(w, r, p, err)
			return
		}
		s.log.Info("fleetlock: slot locked", "group", p.Group, "id", p.ID, "slot", lk.Slot.Index)
	} else {
		_, err := s.sem.Unlock(ctx, p.Group, p.ID, p.ID, false)
		if err != nil && !errors.Is(err, locksmith.ErrNotHeld) {
			s.fail(w, r, p, err)
			return
		}
		if err == nil {
			s.log.Info("fleetlock: slot released", "group", p.Group, "id", p.ID)
		}
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, p Params, err error) {
	var e *Error
	switch {
	case errors.Is(err, locksmith.ErrFull):
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfterFull.Seconds())))
		e = &Error{http.StatusConflict, KindSemaphoreFull, err.Error()}
	case backendUnavailable(err):
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfterBackend.Seconds())))
		e = &Error{http.StatusServiceUnavailable, KindBackendUnavailable, "the lock store (etcd) is unavailable (no answer in time, unreachable or without a leader); try again later"}
	default:
		e = &Error{http.StatusInternalServerError, KindInternal, err.Error()}
	}
	s.log.Warn("fleetlock: request failed", "path", r.URL.Path, "group", p.Group, "id", p.ID, "status", e.Status, "kind", e.Kind, "err", err)
	writeError(w, e)
}

// backendUnavailable reports whether err means etcd could not answer now (out of time, no
// connection, or no leader because a majority of its members is down), so asking again later
// may succeed; other store errors (credentials, TLS, corrupt keys) need an operator.
func backendUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ee *locksmith.EtcdError
	if !errors.As(err, &ee) {
		return false
	}
	switch ee.Cause {
	case locksmith.CauseNoLeader, locksmith.CauseUnreachable, locksmith.CauseTimeout, locksmith.CauseCanceled:
		return true
	}
	return false
}

func writeError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(e)
}
