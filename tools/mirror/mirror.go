package mirror

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// Defaults of Config.
const (
	DefaultInterval   = time.Hour
	DefaultWorkers    = 4
	DefaultAttempts   = 4
	DefaultMinBackoff = 2 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultStall is how long a download may go without a byte before it is dropped and
	// resumed.
	DefaultStall = 2 * time.Minute
	// SyntheticVersion is the version the mirror reports: lower than any release, so the
	// upstream always offers its newest.
	SyntheticVersion = "0.0.0"
	// UpdaterVersion is the request's version/updaterversion attribute.
	UpdaterVersion = "twinslot-mirror-0.1.0"
)

// Config configures a Mirror.
type Config struct {
	Upstream string // the upstream's Omaha endpoint, e.g. https://public.update.flatcar-linux.net/v1/update/
	Pairs    []Pair
	Dir      string // machine id, partial and verified files
	Local    Local  // where verified offers are published
	// Interval is the time between rounds when all went well (jittered ±10%); DefaultInterval if 0.
	Interval time.Duration
	// Workers is how many files download at once; DefaultWorkers if 0.
	Workers int
	// Attempts bounds the tries of one check and of one offer's download in a round;
	// DefaultAttempts if 0.
	Attempts int
	// MinBackoff and MaxBackoff bound the jittered exponential backoff between attempts and
	// between failed rounds; the defaults if 0.
	MinBackoff, MaxBackoff time.Duration
	// Stall is how long a download may receive nothing before it is dropped (and resumed by
	// the next attempt); DefaultStall if 0.
	Stall time.Duration
	HTTP  *http.Client     // nil = a client of the mirror's own
	Now   func() time.Time // nil = time.Now
	// Report receives every status event (nil = none). It is called from the goroutine that
	// runs the round and must not block for long.
	Report func(Event)
}

// Mirror follows an upstream for a set of pairs. Its methods are safe for concurrent use.
type Mirror struct {
	upstream   string
	pairs      []Pair
	dir        string
	local      Local
	interval   time.Duration
	workers    int
	attempts   int
	minB, maxB time.Duration
	stall      time.Duration
	http       *http.Client
	now        func() time.Time
	report     func(Event)
	client     *omaha.Client
	machineID  string
	bootID     string
	userAgent  string

	round sync.Mutex // one round at a time: rounds share the partial files

	mu    sync.Mutex
	stats Stats
}

// New checks cfg, creates the directory and its machine id if needed, and returns a Mirror.
func New(cfg Config) (*Mirror, error) {
	if len(cfg.Pairs) == 0 {
		return nil, errors.New("mirror: no pair to follow: give at least one app/channel/board")
	}
	if cfg.Dir == "" {
		return nil, errors.New("mirror: no directory for downloads")
	}
	if cfg.Local == nil {
		return nil, errors.New("mirror: no local server to publish to")
	}
	seen := map[string]bool{}
	for _, p := range cfg.Pairs {
		k := p.App + "/" + p.Local + "/" + p.Board
		if seen[k] {
			return nil, fmt.Errorf("mirror: two pairs feed local channel %s for board %s: keep one", p.Local, p.Board)
		}
		seen[k] = true
	}
	m := &Mirror{
		upstream: cfg.Upstream, pairs: cfg.Pairs, dir: cfg.Dir, local: cfg.Local,
		interval: orDefault(cfg.Interval, DefaultInterval), workers: orDefault(cfg.Workers, DefaultWorkers),
		attempts: orDefault(cfg.Attempts, DefaultAttempts), minB: orDefault(cfg.MinBackoff, DefaultMinBackoff),
		maxB: orDefault(cfg.MaxBackoff, DefaultMaxBackoff), stall: orDefault(cfg.Stall, DefaultStall), http: cfg.HTTP, now: cfg.Now, report: cfg.Report,
		userAgent: UpdaterVersion,
	}
	if m.maxB < m.minB {
		m.maxB = m.minB
	}
	if m.http == nil {
		m.http = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: time.Minute}}
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.report == nil {
		m.report = func(Event) {}
	}
	var err error
	if m.client, err = omaha.NewClient([]string{cfg.Upstream}, omaha.ClientOptions{HTTPClient: m.http, UpdaterVersion: UpdaterVersion}); err != nil {
		return nil, fmt.Errorf("mirror: --upstream: %w", err)
	}
	for _, sub := range []string{"partial", "packages"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("mirror: %w", err)
		}
	}
	if m.machineID, err = loadMachineID(filepath.Join(cfg.Dir, "machine-id")); err != nil {
		return nil, err
	}
	m.bootID = newUUID()
	m.stats.Pairs = map[string]PairState{}
	return m, nil
}

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

// loadMachineID reads the mirror's machine id, creating it (temp file, fsync, rename) the
// first time.
func loadMachineID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if omaha.CheckMachineID(id) != nil {
			return "", fmt.Errorf("mirror: %s holds %.40q, not 32 hex digits: delete it to get a new id", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("mirror: %w", err)
	}
	var r [16]byte
	crand.Read(r[:])
	id := hex.EncodeToString(r[:])
	if err := atomicfile.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("mirror: %w", err)
	}
	return id, nil
}

func newUUID() string {
	var r [16]byte
	crand.Read(r[:])
	r[6] = r[6]&0x0f | 0x40
	r[8] = r[8]&0x3f | 0x80
	h := hex.EncodeToString(r[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// MachineID returns the id the mirror checks in with for p: derived from the stored id and
// the pair, so each pair is one stable instance upstream.
func (m *Mirror) MachineID(p Pair) string {
	h := sha256.Sum256([]byte(m.machineID + "\x00" + p.App + "\x00" + p.Channel + "\x00" + p.Board))
	return hex.EncodeToString(h[:16])
}

// Stats returns a copy of the counters and per-pair states.
func (m *Mirror) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Pairs = make(map[string]PairState, len(m.stats.Pairs))
	for k, v := range m.stats.Pairs {
		s.Pairs[k] = v
	}
	return s
}

func (m *Mirror) count(f func(s *Stats)) {
	m.mu.Lock()
	f(&m.stats)
	m.stats.Updated = m.now()
	m.mu.Unlock()
}

func (m *Mirror) pairState(p Pair, f func(ps *PairState)) {
	m.count(func(s *Stats) {
		ps := s.Pairs[p.String()]
		f(&ps)
		s.Pairs[p.String()] = ps
	})
}

func (m *Mirror) emit(ev Event) {
	ev.Time = m.now()
	m.report(ev)
}

// Run mirrors until ctx ends: a round every Interval (jittered), or sooner, at the backoff's
// pace, after a round that failed. It returns ctx's error.
func (m *Mirror) Run(ctx context.Context) error {
	failures := 0
	for {
		err := m.Once(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := jitter(m.interval, 0.1)
		if err != nil {
			failures++
			wait = min(m.backoff(failures), wait)
		} else {
			failures = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the jittered wait before attempt n+1 (n ≥ 1): MinBackoff·2^(n-1), capped at
// MaxBackoff, then drawn uniformly from its upper half.
func (m *Mirror) backoff(n int) time.Duration {
	d := m.minB
	for i := 1; i < n && d < m.maxB; i++ {
		d *= 2
	}
	d = min(d, m.maxB)
	return d/2 + rand.N(d/2+1)
}

// jitter returns d changed by up to ±frac.
func jitter(d time.Duration, frac float64) time.Duration {
	span := time.Duration(float64(d) * frac)
	if span <= 0 {
		return d
	}
	return d - span + rand.N(2*span+1)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Once runs one round: each pair in turn is checked upstream and, when a new version is
// offered, mirrored. It returns the pairs' errors joined (nil when every pair is up to date
// or was mirrored).
func (m *Mirror) Once(ctx context.Context) error {
	m.round.Lock()
	defer m.round.Unlock()
	var errs []error
	for _, p := range m.pairs {
		if err := m.pair(ctx, p); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m.pairState(p, func(ps *PairState) { ps.LastError, ps.ErrorAt = err.Error(), m.now() })
			m.emit(Event{Phase: PhaseFailed, Pair: p.String(), Message: fmt.Sprintf("%s: %v", p.short(), err)})
			errs = append(errs, fmt.Errorf("%s: %w", p.short(), err))
			continue
		}
		m.pairState(p, func(ps *PairState) { ps.LastError, ps.ErrorAt = "", time.Time{} })
	}
	return errors.Join(errs...)
}

// pair runs one round for p.
func (m *Mirror) pair(ctx context.Context, p Pair) error {
	o, err := m.check(ctx, p)
	if err != nil || o == nil {
		return err
	}
	has, err := m.local.Carries(ctx, o)
	if err != nil {
		return err
	}
	if has {
		m.pairState(p, func(ps *PairState) { ps.Local = o.Version })
		m.emit(Event{Phase: PhaseUpToDate, Pair: p.String(), Version: o.Version,
			Message: fmt.Sprintf("%s: local channel %s already carries %s", p.short(), p.Local, o.Version)})
		return nil
	}
	paths, err := m.obtain(ctx, o)
	if err != nil {
		return err
	}
	if err := m.local.Publish(ctx, o, paths); err != nil {
		m.count(func(s *Stats) { s.PublishFailures++ })
		return err
	}
	m.count(func(s *Stats) { s.Published++ })
	m.pairState(p, func(ps *PairState) { ps.Local = o.Version })
	m.emit(Event{Phase: PhasePublished, Pair: p.String(), Version: o.Version, Total: o.total(),
		Message: fmt.Sprintf("%s: published %s on the local server; channel %s now carries it", p.short(), o.Version, p.Local)})
	return nil
}

// check asks the upstream what it offers p, retrying transient failures with backoff. It
// returns nil, nil for noupdate.
func (m *Mirror) check(ctx context.Context, p Pair) (*Offer, error) {
	h := omaha.Host{AppID: p.App, MachineID: m.MachineID(p), BootID: m.bootID, Version: SyntheticVersion,
		Track: p.Channel, Board: p.Board}
	for n := 1; ; n++ {
		m.emit(Event{Phase: PhaseCheck, Pair: p.String(), Message: fmt.Sprintf("%s: checking %s", p.short(), m.upstream)})
		m.count(func(s *Stats) { s.Checks++ })
		res, err := m.client.UpdateCheck(ctx, h, omaha.CheckOptions{})
		if err == nil {
			m.pairState(p, func(ps *PairState) { ps.LastCheck = m.now() })
			return m.offer(p, res)
		}
		m.count(func(s *Stats) { s.CheckFailures++ })
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ue := &UpstreamError{Upstream: m.upstream, Transient: omaha.IsTransient(err), Attempts: n, Err: explainStatus(p, err)}
		if !ue.Transient || n >= m.attempts {
			return nil, ue
		}
		wait := m.backoff(n)
		m.emit(Event{Phase: PhaseUnreachable, Pair: p.String(), Retry: wait,
			Message: fmt.Sprintf("%s: upstream unreachable or failing: %v; attempt %d of %d, retrying in %s", p.short(), cause(err), n, m.attempts, wait.Round(time.Millisecond))})
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// explainStatus says what an Omaha error status means for the pair (Nebraska's and omahad's
// answers to an unknown app or track).
func explainStatus(p Pair, err error) error {
	var oe *omaha.Error
	if !errors.As(err, &oe) {
		return err
	}
	switch oe.Status {
	case omaha.StatusUnknownApplication:
		return fmt.Errorf("it knows no app %s: check the pair's app id (%w)", p.App, err)
	case "error-unknownApplicationOrGroup":
		return fmt.Errorf("it knows no channel or group %q for app %s: check the pair's channel (%w)", p.Channel, p.App, err)
	}
	return err
}

// offer turns a check's answer into an Offer, refusing what cannot be mirrored safely.
func (m *Mirror) offer(p Pair, res *omaha.CheckResult) (*Offer, error) {
	if res.Update == nil {
		m.emit(Event{Phase: PhaseNoUpdate, Pair: p.String(), Message: fmt.Sprintf("%s: the upstream offers nothing (noupdate)", p.short())})
		return nil, nil
	}
	u := res.Update
	if err := omaha.CheckVersion(u.Version); err != nil {
		return nil, &UpstreamError{Upstream: m.upstream, Err: fmt.Errorf("offered version: %w", err)}
	}
	m.pairState(p, func(ps *PairState) { ps.Upstream = u.Version })
	o := &Offer{Pair: p, Version: u.Version}
	// The client checked the payload against the postinstall action and decoded every extra
	// package's hashes; the mirror also wants a SHA-256 for each file it publishes.
	pkgs := append([]omaha.ExtraFile{{Name: u.PackageName, Size: u.Size, SHA256: u.SHA256, SHA1: u.SHA1}}, u.Extras...)
	for _, pkg := range pkgs {
		if err := checkFileName(pkg.Name); err != nil {
			return nil, &UpstreamError{Upstream: m.upstream, Err: err}
		}
		if pkg.Size <= 0 {
			return nil, &UpstreamError{Upstream: m.upstream, Err: fmt.Errorf("package %s: size %d", pkg.Name, pkg.Size)}
		}
		if pkg.SHA256 == [sha256.Size]byte{} {
			return nil, &UpstreamError{Upstream: m.upstream, Err: fmt.Errorf("package %s: no hash_sha256, so it is not a SHA-256 the mirror can check: the mirror publishes nothing it cannot check", pkg.Name)}
		}
		f := File{Name: pkg.Name, Size: pkg.Size, SHA256: pkg.SHA256, SHA1: pkg.SHA1, URLs: u.FileURLs(pkg.Name)}
		for _, g := range o.Files {
			if g.Name == f.Name || g.SHA256 == f.SHA256 {
				return nil, &UpstreamError{Upstream: m.upstream, Err: fmt.Errorf("packages %s and %s of %s have the same name or SHA-256", g.Name, f.Name, u.Version)}
			}
		}
		o.Files = append(o.Files, f)
	}
	return o, nil
}

// checkFileName accepts a plain file name from the upstream: it becomes a path in DIR.
func checkFileName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' || strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 {
		return fmt.Errorf("package name %.60q: want a plain file name of letters, digits, '.', '_' and '-'", name)
	}
	return nil
}

// obtain returns the verified files of o under packages/: those already stored there, the
// others downloaded (resuming across attempts) and verified.
func (m *Mirror) obtain(ctx context.Context, o *Offer) ([]string, error) {
	p := o.Pair
	paths := make([]string, len(o.Files))
	var missing []File
	for i, f := range o.Files {
		dst := filepath.Join(m.dir, "packages", p.App, p.Board, o.Version, f.Name)
		if verifyFile(dst, f) == nil {
			paths[i] = dst
			continue
		}
		missing = append(missing, f)
	}
	if len(missing) == 0 {
		return paths, nil
	}
	sub := &Offer{Pair: p, Version: o.Version, Files: missing}
	total := sub.total()
	m.emit(Event{Phase: PhaseOffer, Pair: p.String(), Version: o.Version, Total: total,
		Message: fmt.Sprintf("%s: the upstream offers %s (%d file(s), %d bytes): downloading", p.short(), o.Version, len(missing), total)})
	for n := 1; ; n++ {
		res := m.fetch(ctx, sub, n-1, func(done, resumed int64) {
			m.emit(Event{Phase: PhaseDownload, Pair: p.String(), Version: o.Version, Done: done, Total: total, Resumed: resumed})
		})
		m.count(func(s *Stats) { s.BytesDownloaded += res.fetched; s.BytesResumed += res.resumed })
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs := res.errs
		if len(errs) == 0 {
			for _, f := range missing {
				if err := m.verify(f); err != nil {
					errs = append(errs, err)
				}
			}
		}
		var ie *IntegrityError
		refused := false
		for _, err := range errs {
			if errors.As(err, &ie) {
				refused = true
				m.count(func(s *Stats) { s.IntegrityErrors++ })
				m.emit(Event{Phase: PhaseRefused, Pair: p.String(), Version: o.Version, File: ie.File, Expected: ie.Expected, Got: ie.Got,
					Message: fmt.Sprintf("%s: %s: refused %s: its %s is %s, the upstream offered %s", p.short(), o.Version, ie.File, ie.What, ie.Got, ie.Expected)})
			}
		}
		if len(errs) == 0 {
			break
		}
		err := errors.Join(errs...)
		// A file that arrived whole and wrong is not fetched again in this round.
		if !res.retry || refused || n >= m.attempts {
			return nil, fmt.Errorf("download of %s: %w", o.Version, err)
		}
		m.count(func(s *Stats) { s.DownloadRetries++ })
		wait := m.backoff(n)
		m.emit(Event{Phase: PhaseRetry, Pair: p.String(), Version: o.Version, Retry: wait,
			Message: fmt.Sprintf("%s: download of %s: %v; attempt %d of %d, resuming in %s", p.short(), o.Version, err, n, m.attempts, wait.Round(time.Millisecond))})
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
	j := 0
	for i := range paths {
		if paths[i] != "" {
			continue
		}
		dst, err := m.store(o, missing[j])
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", missing[j].Name, err)
		}
		paths[i] = dst
		j++
	}
	m.count(func(s *Stats) { s.Downloads += int64(len(missing)) })
	return paths, nil
}
