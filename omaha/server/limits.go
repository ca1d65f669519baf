package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// The HTTP limits of Serve. A client that sends or reads slowly holds a connection (a goroutine
// and its buffers) only so long, and one client address holds only so many connections, so a
// few hundred slow connections cannot starve the fleet's check-ins.
const (
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, body included, on the endpoints with small
	// bodies (Omaha check-ins, the admin JSON API).
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds handling a request and writing its response, from the end of its
	// headers, on the endpoints with small responses.
	WriteTimeout = time.Minute
	// IdleTimeout closes a kept-alive connection that sends no next request.
	IdleTimeout = 2 * time.Minute
	// TransferStall is the longest a payload upload or download may go without a byte read or
	// written; one that keeps moving runs as long as it needs (a payload may be gigabytes).
	TransferStall = time.Minute
	// DefaultMaxConnsPerClient caps the open connections of one client IP address; more are
	// answered 503 and closed. Behind a proxy every connection comes from the proxy: there,
	// turn the cap off (Config.MaxConnsPerClient < 0) and let the proxy enforce one.
	DefaultMaxConnsPerClient = 256
)

// limits are the timeouts Serve applies; tests shorten them.
type limits struct {
	readHeader, read, write, idle, stall time.Duration
}

func defaultLimits() limits {
	return limits{readHeader: ReadHeaderTimeout, read: ReadTimeout, write: WriteTimeout, idle: IdleTimeout, stall: TransferStall}
}

// LimitsHelp describes the limits for omahad serve --help.
func LimitsHelp() string {
	return fmt.Sprintf(`Limits against slow or greedy clients: request headers must arrive within %v, small requests
(check-ins, admin API) within %v and their answers within %v; payload uploads and downloads may
run as long as they move, but not stall for %v; an idle kept-alive connection is closed after %v;
one client address may hold --max-conns-per-client connections.`,
		ReadHeaderTimeout, ReadTimeout, WriteTimeout, TransferStall, IdleTimeout)
}

// clientListener caps the open connections per client IP address: a connection over the cap
// is answered 503 and closed at once.
type clientListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu      sync.Mutex
	open    map[string]int
	refused map[string]bool // warned about since the client was last under the cap
}

func newClientListener(ln net.Listener, maxConns int, log *slog.Logger) *clientListener {
	return &clientListener{Listener: ln, max: maxConns, log: log, open: map[string]int{}, refused: map[string]bool{}}
}

// refusal is the whole answer to a connection over the cap.
func refusal() string {
	const body = "too many connections from your address: close some, or retry later\n"
	return fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 10\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func (l *clientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := clientHost(c.RemoteAddr())
		l.mu.Lock()
		n := l.open[host]
		if n >= l.max {
			warn := !l.refused[host]
			l.refused[host] = true
			l.mu.Unlock()
			if warn {
				l.log.Warn("refusing connections: client at its connection cap", "client", host, "max", l.max)
			}
			// The answer is smaller than any socket buffer: the write does not wait on the client.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, refusal())
			c.Close()
			continue
		}
		l.open[host] = n + 1
		l.mu.Unlock()
		return &clientConn{Conn: c, l: l, host: host}, nil
	}
}

func (l *clientListener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[host]--; l.open[host] <= 0 {
		delete(l.open, host)
	}
	if l.open[host] < l.max {
		delete(l.refused, host)
	}
}

func clientHost(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// clientConn gives its slot back on the first Close.
type clientConn struct {
	net.Conn
	l    *clientListener
	host string
	once sync.Once
}

func (c *clientConn) Close() error {
	c.once.Do(func() { c.l.release(c.host) })
	return c.Conn.Close()
}

// stallReader reads a request body of any length, as long as no read waits longer than stall:
// each read moves the connection's read deadline (which ReadTimeout set) forward.
type stallReader struct {
	r     io.Reader
	rc    *http.ResponseController
	stall time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	if err := s.rc.SetReadDeadline(time.Now().Add(s.stall)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	return s.r.Read(p)
}

// stallWriter writes a response of any length, as long as no write waits longer than stall:
// each write moves the connection's write deadline (which WriteTimeout set) forward.
// ReadFrom keeps the sendfile path of a file body, in steps of stallStep bytes.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

// stallStep is how many bytes a download sends per write deadline.
const stallStep = 4 << 20

func (s *stallWriter) extend() error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.stall)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if err := s.extend(); err != nil {
		return 0, err
	}
	return s.ResponseWriter.Write(p)
}

func (s *stallWriter) ReadFrom(src io.Reader) (int64, error) {
	// http.ServeContent hands over an *io.LimitedReader of the file; the connection's sendfile
	// looks through one such wrapper, so each step rewraps the file rather than the wrapper.
	inner, limit := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, limit = lr.R, lr.N
	}
	var total int64
	for limit != 0 {
		if err := s.extend(); err != nil {
			return total, err
		}
		step := int64(stallStep)
		if limit > 0 && limit < step {
			step = limit
		}
		n, err := io.Copy(s.ResponseWriter, &io.LimitedReader{R: inner, N: step})
		total += n
		if limit > 0 {
			limit -= n
		}
		if lr, ok := src.(*io.LimitedReader); ok {
			lr.N -= n
		}
		if err != nil {
			return total, err
		}
		if n < step {
			break // the source ended
		}
	}
	return total, nil
}

func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
