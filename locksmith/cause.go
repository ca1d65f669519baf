package locksmith

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// probeTimeout bounds each endpoint probe made to explain a failure. Probes run only after a
// request failed and never change anything in etcd.
const probeTimeout = time.Second

// fail wraps err, from an etcd request made for op on group, in an *EtcdError with its cause.
func (s *Store) fail(ctx context.Context, group, op string, err error) error {
	if err == nil {
		return nil
	}
	var ee *EtcdError
	if errors.As(err, &ee) {
		return err
	}
	eps := s.cli.Endpoints()
	c := classify(err)
	if c == CauseTimeout && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		c = CauseCanceled
	}
	if c == CauseTimeout && !s.connected() {
		// The client never got a working connection: find out why from the endpoints.
		c = probe(ctx, eps)
	}
	return &EtcdError{Op: op, Group: group, Cause: c, Endpoints: eps, Err: err}
}

// connected reports whether the client's connection to etcd is up.
func (s *Store) connected() bool {
	conn := s.cli.ActiveConnection()
	return conn != nil && conn.GetState() == connectivity.Ready
}

// classify tells the cause from the error alone; CauseTimeout covers every error that needs a
// look at the connection to say more (deadlines, unavailable).
func classify(err error) Cause {
	msg := err.Error()
	code := status.Code(err)
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrGRPCNoLeader), strings.Contains(msg, "no leader"):
		return CauseNoLeader
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrPermissionDenied),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrUserEmpty),
		errors.Is(err, rpctypes.ErrAuthOldRevision), code == codes.Unauthenticated, code == codes.PermissionDenied:
		return CauseAuth
	case strings.Contains(msg, "x509:"), strings.Contains(msg, "tls:"), strings.Contains(msg, "handshake failed"):
		return CauseTLS
	case errors.Is(err, context.Canceled), code == codes.Canceled:
		return CauseCanceled
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "connection reset"),
		strings.Contains(msg, "no such host"), strings.Contains(msg, "network is unreachable"),
		strings.Contains(msg, "error reading from server: EOF"):
		return CauseUnreachable
	case errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrTimeoutWaitAppliedIndex):
		return CauseTimeout // etcd's own "request timed out": proposed but not committed in time
	case errors.Is(err, context.DeadlineExceeded), code == codes.DeadlineExceeded, code == codes.Unavailable,
		errors.Is(err, clientv3.ErrNoAvailableEndpoints), strings.Contains(msg, context.DeadlineExceeded.Error()):
		return CauseTimeout
	}
	return CauseOther
}

// probe looks at each endpoint to explain a client that could not connect: nobody accepts a
// connection (unreachable); a member accepts but never speaks (a stopped or overloaded member:
// timeout); or it speaks another protocol than the endpoint's scheme says (TLS, either way).
func probe(ctx context.Context, endpoints []string) Cause {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout*time.Duration(len(endpoints)+1))
	defer cancel()
	verdict := CauseUnreachable
	for _, ep := range endpoints {
		switch c := probeOne(pctx, ep); c {
		case CauseTLS:
			return c // a definite answer: the client and this member disagree on TLS
		case CauseTimeout:
			verdict = c
		}
	}
	return verdict
}

// probeOne returns CauseUnreachable (no TCP connection), CauseTimeout (connected, silent),
// CauseTLS (the member talks TLS where the endpoint says http, or rejects a TLS handshake that
// skips verification, or the reverse) or CauseOther (it answers as the scheme says).
func probeOne(ctx context.Context, endpoint string) Cause {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return CauseUnreachable
	}
	d := net.Dialer{Timeout: probeTimeout}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return CauseUnreachable
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(probeTimeout))
	if u.Scheme == "https" {
		// Only to see whether a TLS server answers at all; nothing is sent over it.
		err := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(ctx) //nolint:gosec // a probe, not a client
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return CauseTimeout
		}
		// A TLS server that answers (the client's certificates or CA are wrong), or a member
		// that does not speak TLS at all behind an https:// endpoint.
		return CauseTLS
	}
	// The HTTP/2 preface and an empty SETTINGS frame: a plain etcd answers with its SETTINGS,
	// a TLS one hangs up or sends an alert.
	if _, err := io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
		return CauseUnreachable
	}
	var b [1]byte
	_, err = conn.Read(b[:])
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return CauseTimeout
	case err != nil, b[0] == 0x15, b[0] == 0x16:
		return CauseTLS // hung up on HTTP/2, or a TLS record: a TLS member behind http://
	}
	return CauseOther
}
