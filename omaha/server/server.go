package server

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// Defaults of Config.
const (
	DefaultFlushInterval = 5 * time.Millisecond
	DefaultBatchRows     = 1000
	DefaultQueueRows     = 200_000
	DefaultCachePoll     = time.Second
	// DefaultAutoPromoteEvery is how often automatic promotion gates are evaluated.
	DefaultAutoPromoteEvery = time.Minute
	DefaultInstanceCache    = 250_000
	DefaultMaxUploadBytes   = 16 << 30
	DefaultEventRetention   = 30 * 24 * time.Hour
	// holdFor is how long a group whose cap was reached answers onhold without asking the
	// database again.
	holdFor = time.Second
	// maxJSONBytes caps admin API request bodies (a trust root is at most store.MaxTrustLen).
	maxJSONBytes = 1 << 20
	// pruneEvery and pruneBatch pace the deletion of events older than the retention.
	pruneEvery = time.Hour
	pruneBatch = 10_000
)

// Config configures a Server.
type Config struct {
	DB *store.DB // required
	// StoreDir (required) is where uploaded payload files are kept. It belongs to this one
	// server: at start, what uploads cut by a crash left in its tmp/ is removed.
	StoreDir string
	// PublicURL is the base URL hosts use to reach this server (http(s)://host[:port][/prefix]),
	// used in the download URLs of responses; "" takes scheme and host from each request.
	PublicURL string
	Logger    *slog.Logger     // nil discards logs
	Now       func() time.Time // nil = time.Now
	// Registry receives the metrics; nil makes a registry with the Go and process collectors.
	Registry *prometheus.Registry
	// FlushInterval, BatchRows and QueueRows tune the group commit of check-ins (see checkins).
	FlushInterval time.Duration
	BatchRows     int
	QueueRows     int
	// CachePoll is how often the catalog version is polled to see other replicas' writes.
	CachePoll time.Duration
	// InstanceCache is how many instance rows the check-in writer keeps in memory so that
	// update checks need no database read (0 = DefaultInstanceCache, < 0 = none: every check
	// reads its row). Keep it on only when this process is the only server writing the
	// database's instances, or when requests of one machine always reach the same replica.
	InstanceCache  int
	MaxUploadBytes int64
	// EventRetention is how long events are kept; < 0 keeps them forever.
	EventRetention time.Duration
	// MaxConnsPerClient caps the connections Serve keeps open per client IP address
	// (0 = DefaultMaxConnsPerClient, < 0 = no cap).
	MaxConnsPerClient int
	// AutoPromoteEvery is how often the gates marked automatic are evaluated (0 =
	// DefaultAutoPromoteEvery, < 0 = never: no automatic promotion by this process).
	AutoPromoteEvery time.Duration
	// AdvanceWavesEvery is how often the waves of groups are evaluated and opened (0 =
	// DefaultAdvanceWavesEvery, < 0 = never by this process).
	AdvanceWavesEvery time.Duration
}

// Server is the update server: the Omaha endpoint, payload downloads, the admin API, the
// dashboard, /metrics and /healthz. Create it with New and stop it with Close.
type Server struct {
	db        *store.DB
	storeDir  string
	publicURL string
	log       *slog.Logger
	now       func() time.Time
	m         *metrics
	maxUpload int64
	limits    limits
	maxConns  int

	cat       atomic.Pointer[catalog]
	refreshMu sync.Mutex
	holds     holds
	rec       *checkins
	machines  keyLocks // serialise requests of one machine
	creds     hostCreds

	cancel    context.CancelFunc // stops the background work
	flushStop context.CancelFunc // bounds the final flush
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns a server over c.DB. It loads the catalog and starts the check-in writer, the
// catalog poller and the event pruner, which run until Close. ctx bounds only the start.
func New(ctx context.Context, c Config) (*Server, error) {
	if c.DB == nil {
		return nil, errors.New("server: no database")
	}
	if c.StoreDir == "" {
		return nil, errors.New("server: no payload store directory (--store)")
	}
	if c.PublicURL != "" {
		if err := store.CheckURL(c.PublicURL); err != nil {
			return nil, fmt.Errorf("server: public URL: %w", err)
		}
	}
	for _, d := range []string{c.StoreDir, filepath.Join(c.StoreDir, "sha256"), filepath.Join(c.StoreDir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("server: payload store: %w", err)
		}
	}
	if err := atomicfile.RemoveTemps(filepath.Join(c.StoreDir, "tmp"), uploadPrefix); err != nil {
		return nil, fmt.Errorf("server: payload store: %w", err)
	}
	s := &Server{
		db: c.DB, storeDir: c.StoreDir, publicURL: strings.TrimRight(c.PublicURL, "/"),
		log: c.Logger, now: c.Now, m: newMetrics(c.Registry), maxUpload: c.MaxUploadBytes,
		limits: defaultLimits(), maxConns: c.MaxConnsPerClient,
	}
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConnsPerClient
	}
	s.machines.seed = maphash.MakeSeed()
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxUpload <= 0 {
		s.maxUpload = DefaultMaxUploadBytes
	}
	if err := s.refresh(ctx, true); err != nil {
		return nil, fmt.Errorf("server: load catalog: %w", err)
	}
	s.rec = newCheckins(c.DB, s.log, s.m, orDefault(c.FlushInterval, DefaultFlushInterval),
		orDefault(c.BatchRows, DefaultBatchRows), orDefault(c.QueueRows, DefaultQueueRows), orDefault(c.InstanceCache, DefaultInstanceCache))
	s.rec.onHalt = s.halted
	if err := s.rec.preload(ctx, c.DB); err != nil {
		return nil, err
	}
	if err := s.reloadCredentials(ctx, true); err != nil {
		return nil, err
	}

	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	flushCtx, flushStop := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.flushStop = cancel, flushStop
	s.wg.Go(func() { s.rec.run(bg, flushCtx) })
	s.wg.Go(func() {
		s.every(bg, orDefault(c.CachePoll, DefaultCachePoll), "reload catalog", func(ctx context.Context) error { return s.refresh(ctx, false) })
	})
	s.wg.Go(func() {
		s.every(bg, orDefault(c.CachePoll, DefaultCachePoll), "reload host credentials", func(ctx context.Context) error { return s.reloadCredentials(ctx, false) })
	})
	if every := orDefault(c.AutoPromoteEvery, DefaultAutoPromoteEvery); every > 0 {
		s.wg.Go(func() { s.every(bg, every, "automatic promotion", s.autoPromoteOnce) })
	}
	if every := orDefault(c.AdvanceWavesEvery, DefaultAdvanceWavesEvery); every > 0 {
		s.wg.Go(func() { s.every(bg, every, "advance waves", s.advanceWavesOnce) })
	}
	if ret := orDefault(c.EventRetention, DefaultEventRetention); ret > 0 {
		s.wg.Go(func() { s.pruneEvents(bg, ret) })
	}
	return s, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Close stops the background work and writes the check-ins still queued, waiting at most
// until ctx ends (then the rest is lost, and Close says how many rows).
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.flushStop()
			<-done
		}
		s.flushStop()
		if n := s.rec.size(); n > 0 {
			err = fmt.Errorf("server: %d check-in rows not written at shutdown", n)
		}
	})
	return err
}

// Flush writes every queued check-in and event now (tests and shutdown use it).
func (s *Server) Flush(ctx context.Context) error { return s.rec.drain(ctx) }

// Handler returns the HTTP handler serving everything.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/update/{$}", s.handleUpdate)
	mux.HandleFunc("POST /v1/update", s.handleUpdate)
	mux.HandleFunc("POST /v1/enroll", s.handleEnroll)
	mux.HandleFunc("GET /packages/{sha256}/{name}", s.handleDownload)
	mux.Handle("GET /metrics", s.m.handler())
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.Handle("GET /{$}", s.auth(store.RoleReadOnly, "", http.HandlerFunc(s.handleDashboard)))
	mux.Handle("GET /dashboard.js", staticFile("text/javascript; charset=utf-8", dashboardJS))
	mux.Handle("GET /dashboard.css", staticFile("text/css; charset=utf-8", dashboardCSS))
	s.adminRoutes(mux)
	return s.m.instrument(mux)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.db.Ping(ctx); err != nil {
		http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if n := s.rec.size(); n >= s.rec.queueRows {
		http.Error(w, fmt.Sprintf("check-in queue full (%d rows): the database cannot keep up", n), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (s *Server) pruneEvents(ctx context.Context, retention time.Duration) {
	t := time.NewTicker(pruneEvery)
	defer t.Stop()
	for {
		before := s.now().Add(-retention)
		for {
			n, err := s.db.PruneEvents(ctx, before, pruneBatch)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("prune events", "err", err)
				}
				break
			}
			if n > 0 {
				s.log.Info("pruned events", "n", n, "before", before)
			}
			if n < pruneBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Serve serves on ln until ctx ends, then shuts down gracefully: in-flight requests get up to
// grace to finish, and queued check-ins are written. It applies the timeouts of limits.go and
// the per-client connection cap.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.limits.readHeader,
		ReadTimeout:       s.limits.read,
		WriteTimeout:      s.limits.write,
		IdleTimeout:       s.limits.idle,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.maxConns > 0 {
		ln = newClientListener(ln, s.maxConns, s.log)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	s.log.Info("shutting down", "grace", grace)
	err := hs.Shutdown(sctx)
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return errors.Join(serveErr, err, s.Close(sctx))
}
