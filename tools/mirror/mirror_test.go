package mirror_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/tools/mirror"
)

const app = "a4c4a3c6-6e0b-4b55-9a8e-2b1c2f0e6a10"

// world is an upstream omahad (reached through a wrapping handler on its own loopback
// listener), a local omahad with the same app and trust root, and a mirror config between.
type world struct {
	up, local *omahatest.Server
	upURL     string // the wrapper's Omaha endpoint
	key       *payloadtest.Key
	events    *eventLog
	cfg       mirror.Config
}

type eventLog struct {
	mu  sync.Mutex
	evs []mirror.Event
}

func (l *eventLog) add(ev mirror.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) phase(p mirror.Phase) []mirror.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []mirror.Event
	for _, ev := range l.evs {
		if ev.Phase == p {
			out = append(out, ev)
		}
	}
	return out
}

func newWorld(t *testing.T, wrap func(http.Handler) http.Handler) *world {
	t.Helper()
	w := &world{up: omahatest.New(t), local: omahatest.New(t), key: payloadtest.NewKey(t, ""), events: &eventLog{}}
	tr := payloadtest.TrustRoot(t, 1, 0, w.key)
	w.up.CreateApp(t, app, tr)
	w.local.CreateApp(t, app, tr)
	h := w.up.Server.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	w.upURL = hs.URL + "/v1/update/"
	pair, err := mirror.ParsePair(app + "/beta/amd64-usr=stable")
	if err != nil {
		t.Fatal(err)
	}
	w.cfg = mirror.Config{
		Upstream: w.upURL, Pairs: []mirror.Pair{pair}, Dir: t.TempDir(),
		Local: mirror.AdminLocal{Client: w.local.Admin}, Attempts: 3,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Report: w.events.add,
	}
	return w
}

func (w *world) mirror(t *testing.T) *mirror.Mirror {
	t.Helper()
	m, err := mirror.New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// localStable returns the package the local stable channel carries for amd64-usr.
func (w *world) localStable(t *testing.T) (admin.Package, bool) {
	t.Helper()
	chs, err := w.local.Admin.Channels(t.Context(), app)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chs {
		if ch.Name == "stable" {
			p, ok := ch.Packages["amd64-usr"]
			return p, ok
		}
	}
	t.Fatal("no stable channel")
	return admin.Package{}, false
}

// downloads counts the body bytes the upstream served for package downloads, and the Range
// headers asked for.
type downloads struct {
	served atomic.Int64
	mu     sync.Mutex
	ranges []string
}

func (d *downloads) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/packages/") || r.Method != http.MethodGet {
			next.ServeHTTP(rw, r)
			return
		}
		d.mu.Lock()
		d.ranges = append(d.ranges, r.Header.Get("Range"))
		d.mu.Unlock()
		next.ServeHTTP(&countingWriter{ResponseWriter: rw, n: &d.served}, r)
	})
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// TestMirrorNewVersion: a version published upstream on beta ends up on the local stable
// channel with the same bytes; a second round finds it there and downloads nothing; a newer
// upstream version is mirrored on the next round.
func TestMirrorNewVersion(t *testing.T) {
	var d downloads
	w := newWorld(t, d.wrap)
	m := w.mirror(t)
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("round with nothing upstream: %v", err)
	}
	if len(w.events.phase(mirror.PhaseNoUpdate)) != 1 {
		t.Fatalf("want one noupdate event, got %+v", w.events.evs)
	}
	up := w.up.Publish(t, "beta", w.up.BuildPayload(t, "1.2.0", w.key))
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("mirror 1.2.0: %v", err)
	}
	got, ok := w.localStable(t)
	if !ok || got.Version != "1.2.0" || got.SHA256 != up.SHA256 || got.Size != up.Size {
		t.Fatalf("local stable carries %+v (ok %v), want 1.2.0 sha256 %s", got, ok, up.SHA256)
	}
	stored := filepath.Join(w.cfg.Dir, "packages", app, "amd64-usr", "1.2.0", up.FileName)
	if b, err := os.ReadFile(stored); err != nil || fmt.Sprintf("%x", sha256.Sum256(b)) != up.SHA256 {
		t.Fatalf("stored file %s: %v", stored, err)
	}
	if d.served.Load() != up.Size {
		t.Fatalf("upstream served %d bytes, want %d", d.served.Load(), up.Size)
	}
	// The upstream knows the mirror as one instance of the beta group, at version 0.0.0.
	ins := w.up.Instances(t)
	if len(ins) != 1 || ins[0].Version != mirror.SyntheticVersion || ins[0].MachineID != m.MachineID(w.cfg.Pairs[0]) {
		t.Fatalf("upstream instances %+v", ins)
	}

	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("second round: %v", err)
	}
	if n := len(w.events.phase(mirror.PhaseUpToDate)); n != 1 || d.served.Load() != up.Size {
		t.Fatalf("second round: %d uptodate events, %d bytes served; want 1 and no new download", n, d.served.Load())
	}

	up2 := w.up.Publish(t, "beta", w.up.BuildPayload(t, "1.3.0", w.key))
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("mirror 1.3.0: %v", err)
	}
	if got, _ := w.localStable(t); got.Version != "1.3.0" || got.SHA256 != up2.SHA256 {
		t.Fatalf("local stable carries %+v, want 1.3.0", got)
	}
	st := m.Stats()
	if st.Published != 2 || st.Downloads != 2 || st.IntegrityErrors != 0 || st.BytesDownloaded != up.Size+up2.Size {
		t.Fatalf("stats %+v", st)
	}
	if ps := st.Pairs[w.cfg.Pairs[0].String()]; ps.Local != "1.3.0" || ps.Upstream != "1.3.0" || ps.LastError != "" {
		t.Fatalf("pair state %+v", ps)
	}
	// The machine id survives a restart.
	if m2 := w.mirror(t); m2.MachineID(w.cfg.Pairs[0]) != m.MachineID(w.cfg.Pairs[0]) {
		t.Fatal("machine id changed across restarts")
	}
}

// cutOnce cuts the connection of the first package download after n body bytes.
type cutOnce struct {
	n    int64
	done atomic.Bool
}

func (c *cutOnce) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/packages/") || r.Method != http.MethodGet || !c.done.CompareAndSwap(false, true) {
			next.ServeHTTP(rw, r)
			return
		}
		next.ServeHTTP(&cutWriter{ResponseWriter: rw, left: c.n}, r)
	})
}

type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(b []byte) (int, error) {
	if int64(len(b)) < c.left {
		n, err := c.ResponseWriter.Write(b)
		c.left -= int64(n)
		return n, err
	}
	n, _ := c.ResponseWriter.Write(b[:c.left])
	c.left -= int64(n)
	http.NewResponseController(c.ResponseWriter).Flush()
	panic(http.ErrAbortHandler) // the server drops the connection: the client sees a short body
}

// TestMirrorResumesCutDownload: the connection drops mid-file once; the next attempt asks for
// the rest only (Range from the byte it has) and the file is whole and published.
func TestMirrorResumesCutDownload(t *testing.T) {
	var d downloads
	cut := &cutOnce{}
	w := newWorld(t, func(h http.Handler) http.Handler { return d.wrap(cut.wrap(h)) })
	up := w.up.Publish(t, "beta", w.up.BuildPayload(t, "2.0.0", w.key))
	cut.n = up.Size / 3
	m := w.mirror(t)
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("mirror: %v", err)
	}
	if got, _ := w.localStable(t); got.Version != "2.0.0" || got.SHA256 != up.SHA256 {
		t.Fatalf("local stable carries %+v, want 2.0.0", got)
	}
	d.mu.Lock()
	ranges := d.ranges
	d.mu.Unlock()
	want := []string{"", fmt.Sprintf("bytes=%d-", cut.n)}
	if fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Fatalf("download requests asked for ranges %q, want %q", ranges, want)
	}
	if d.served.Load() != up.Size {
		t.Fatalf("upstream served %d body bytes in all, want exactly the file's %d (nothing fetched twice)", d.served.Load(), up.Size)
	}
	st := m.Stats()
	if st.DownloadRetries != 1 || st.BytesResumed != cut.n || st.BytesDownloaded != up.Size {
		t.Fatalf("stats %+v, want 1 retry, %d bytes resumed, %d downloaded", st, cut.n, up.Size)
	}
	if len(w.events.phase(mirror.PhaseRetry)) != 1 {
		t.Fatalf("want one retry event")
	}
}

// hangOnce holds the first package download after n body bytes until the client goes away.
type hangOnce struct {
	n    int64
	done atomic.Bool
}

func (h *hangOnce) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/packages/") || r.Method != http.MethodGet || !h.done.CompareAndSwap(false, true) {
			next.ServeHTTP(rw, r)
			return
		}
		next.ServeHTTP(&hangWriter{ResponseWriter: rw, left: h.n, r: r}, r)
	})
}

type hangWriter struct {
	http.ResponseWriter
	left int64
	r    *http.Request
}

func (h *hangWriter) Write(b []byte) (int, error) {
	if int64(len(b)) < h.left {
		n, err := h.ResponseWriter.Write(b)
		h.left -= int64(n)
		return n, err
	}
	n, _ := h.ResponseWriter.Write(b[:h.left])
	h.left -= int64(n)
	http.NewResponseController(h.ResponseWriter).Flush()
	<-h.r.Context().Done() // the mirror drops a stalled download
	return n, h.r.Context().Err()
}

// TestMirrorResumesStalledDownload: a download that stops moving is dropped after Stall and
// resumed from the byte it reached.
func TestMirrorResumesStalledDownload(t *testing.T) {
	var d downloads
	hang := &hangOnce{}
	w := newWorld(t, func(h http.Handler) http.Handler { return d.wrap(hang.wrap(h)) })
	up := w.up.Publish(t, "beta", w.up.BuildPayload(t, "2.1.0", w.key))
	hang.n = up.Size / 2
	w.cfg.Stall = 300 * time.Millisecond
	m := w.mirror(t)
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("mirror: %v", err)
	}
	if got, _ := w.localStable(t); got.Version != "2.1.0" || got.SHA256 != up.SHA256 {
		t.Fatalf("local stable carries %+v, want 2.1.0", got)
	}
	d.mu.Lock()
	ranges := fmt.Sprint(d.ranges)
	d.mu.Unlock()
	if want := fmt.Sprint([]string{"", fmt.Sprintf("bytes=%d-", hang.n)}); ranges != want {
		t.Fatalf("download requests asked for ranges %s, want %s", ranges, want)
	}
	if evs := w.events.phase(mirror.PhaseRetry); len(evs) != 1 || !strings.Contains(evs[0].Message, "no data arrived") {
		t.Fatalf("retry events %+v", evs)
	}
}

// corrupt flips one byte of every package download: the file arrives with the offered size
// and another SHA-256.
func corrupt(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/packages/") {
			next.ServeHTTP(rw, r)
			return
		}
		next.ServeHTTP(&flipWriter{ResponseWriter: rw}, r)
	})
}

type flipWriter struct {
	http.ResponseWriter
	flipped bool
}

func (f *flipWriter) Write(b []byte) (int, error) {
	if !f.flipped && len(b) > 100 {
		c := append([]byte(nil), b...)
		c[100] ^= 0xff
		f.flipped = true
		return f.ResponseWriter.Write(c)
	}
	return f.ResponseWriter.Write(b)
}

// TestMirrorWrongHash: a download whose SHA-256 is not the offered one publishes nothing, and
// the status names the file, the offered and the received hash.
func TestMirrorWrongHash(t *testing.T) {
	w := newWorld(t, corrupt)
	up := w.up.Publish(t, "beta", w.up.BuildPayload(t, "3.0.0", w.key))
	m := w.mirror(t)
	err := m.Once(t.Context())
	var ie *mirror.IntegrityError
	if !errors.As(err, &ie) || ie.File != up.FileName || ie.What != "sha256" || ie.Expected != up.SHA256 || ie.Got == up.SHA256 {
		t.Fatalf("want an sha256 IntegrityError for %s expecting %s, got %v", up.FileName, up.SHA256, err)
	}
	if !strings.Contains(err.Error(), "nothing was published") {
		t.Fatalf("error does not say nothing was published: %v", err)
	}
	if p, ok := w.localStable(t); ok {
		t.Fatalf("local stable carries %+v after a bad download", p)
	}
	if ps, err := w.local.Admin.Packages(t.Context(), app); err != nil || len(ps) != 0 {
		t.Fatalf("local packages %+v, %v; want none", ps, err)
	}
	evs := w.events.phase(mirror.PhaseRefused)
	if len(evs) != 1 || evs[0].File != up.FileName || evs[0].Expected != up.SHA256 || evs[0].Got != ie.Got {
		t.Fatalf("failed events %+v", evs)
	}
	ents, _ := os.ReadDir(filepath.Join(w.cfg.Dir, "partial"))
	if len(ents) != 0 {
		t.Fatalf("the bad download was kept: %v", ents)
	}
	if st := m.Stats(); st.IntegrityErrors != 1 || st.Published != 0 || st.Pairs[w.cfg.Pairs[0].String()].LastError == "" {
		t.Fatalf("stats %+v", st)
	}
}

// lieVersion rewrites the manifest version of the upstream's Omaha answers: the upstream offers
// the bytes of one version under another version's name.
func lieVersion(from, to string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/v1/update") {
				next.ServeHTTP(rw, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			b := bytes.ReplaceAll(rec.Body.Bytes(), []byte(`version="`+from+`"`), []byte(`version="`+to+`"`))
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					rw.Header()[k] = v
				}
			}
			rw.WriteHeader(rec.Code)
			rw.Write(b)
		})
	}
}

// TestMirrorManifestMismatch: the upstream offers "3.0.0" but serves the validly signed 1.0.0
// payload. The round fails before anything reaches the local server: the local stable channel
// keeps 2.0.0 (a publish would have moved it back to 1.0.0) and no package is created.
func TestMirrorManifestMismatch(t *testing.T) {
	w := newWorld(t, lieVersion("1.0.0", "3.0.0"))
	w.local.Publish(t, "stable", w.local.BuildPayload(t, "2.0.0", w.key))
	w.up.Publish(t, "beta", w.up.BuildPayload(t, "1.0.0", w.key))
	m := w.mirror(t)
	err := m.Once(t.Context())
	if err == nil {
		t.Fatal("round succeeded")
	}
	if got, _ := w.localStable(t); got.Version != "2.0.0" {
		t.Fatalf("the round failed (%v), but the local stable channel now carries %s (was 2.0.0)", err, got.Version)
	}
	if ps, err := w.local.Admin.Packages(t.Context(), app); err != nil || len(ps) != 1 {
		t.Fatalf("local packages %+v, %v; want only 2.0.0", ps, err)
	}
	if !strings.Contains(err.Error(), "nothing was published") || !strings.Contains(err.Error(), "holds 1.0.0") {
		t.Fatalf("want a refusal naming the payload's version, got %v", err)
	}
	if st := m.Stats(); st.Published != 0 || st.PublishFailures != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMirrorUpstreamUnreachable: a closed port is retried with backoff, then reported as an
// unreachable upstream; nothing is published.
func TestMirrorUpstreamUnreachable(t *testing.T) {
	w := newWorld(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	w.cfg.Upstream = "http://" + addr + "/v1/update/"
	m := w.mirror(t)
	err = m.Once(t.Context())
	var ue *mirror.UpstreamError
	if !errors.As(err, &ue) || !ue.Transient || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("want a transient UpstreamError, got %v", err)
	}
	if n := len(w.events.phase(mirror.PhaseUnreachable)); n != w.cfg.Attempts-1 {
		t.Fatalf("%d unreachable events, want %d (one per retry)", n, w.cfg.Attempts-1)
	}
	if st := m.Stats(); st.Checks != int64(w.cfg.Attempts) || st.CheckFailures != int64(w.cfg.Attempts) {
		t.Fatalf("stats %+v", st)
	}
	if _, ok := w.localStable(t); ok {
		t.Fatal("something was published")
	}
}

// TestMirrorUnknownApp: an upstream that knows no such app is not retried, and the status
// says which app.
func TestMirrorUnknownApp(t *testing.T) {
	w := newWorld(t, nil)
	p, err := mirror.ParsePair("0b0b0b0b-1111-4222-8333-444444444444/beta/amd64-usr")
	if err != nil {
		t.Fatal(err)
	}
	w.cfg.Pairs = []mirror.Pair{p}
	m := w.mirror(t)
	err = m.Once(t.Context())
	var ue *mirror.UpstreamError
	if !errors.As(err, &ue) || ue.Transient || !strings.Contains(err.Error(), "knows no app 0b0b0b0b-1111-4222-8333-444444444444") {
		t.Fatalf("want a permanent UpstreamError naming the app, got %v", err)
	}
	if st := m.Stats(); st.Checks != 1 {
		t.Fatalf("%d checks, want 1 (no retry of a definitive answer)", st.Checks)
	}
}

// TestRunStopsWithContext: Run keeps going after a failed round and returns when ctx ends.
func TestRunStopsWithContext(t *testing.T) {
	w := newWorld(t, nil)
	w.cfg.Upstream = "http://127.0.0.1:1/v1/update/"
	w.cfg.Attempts = 1
	m := w.mirror(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	for len(w.events.phase(mirror.PhaseFailed)) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestParsePair(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "stable/amd64-usr", err: "want app/channel/board"},
		{in: "not-a-uuid/stable/amd64-usr", err: "not a UUID"},
		{in: app + "/stable/amd64-usr=", err: "want app/channel/board"},
		{in: app + "/sta ble/amd64-usr", err: "channel"},
		{in: "{" + strings.ToUpper(app) + "}/stable/amd64-usr", want: app + "/stable/amd64-usr"},
		{in: app + "/beta/arm64-usr=stable", want: app + "/beta/arm64-usr=stable"},
	} {
		p, err := mirror.ParsePair(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePair(%q) = %v, %v; want error with %q", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil || p.String() != tc.want {
			t.Errorf("ParsePair(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}
