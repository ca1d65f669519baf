package benchpeers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinslot/twinslot/testimages"
)

// Options configure a run.
type Options struct {
	// Dir holds the images, payloads, stores and scratch space; built files are reused.
	Dir string
	// Size is the /usr image size (a multiple of 4096); default DefaultSize.
	Size int64
	// Seed selects the image content: the same seed gives the same files.
	Seed uint64
	// Rounds is how many interleaved rounds run; default 3.
	Rounds int
	// Changes are the fractions of changed files; default DefaultChanges.
	Changes []float64
	// Kinds are the kinds of change; default both.
	Kinds []testimages.ChangeKind
	// Payload is the path of the twinslot `payload` binary.
	Payload string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Defaults.
const (
	DefaultSize   = 256 << 20
	DefaultRounds = 3
	board         = testimages.DefaultBoard
)

// DefaultChanges are the fractions of changed files measured by default.
var DefaultChanges = []float64{0.01, 0.05, 0.20}

// Tools are the names of the tools measured, in table order.
var Tools = []string{"twinslot", "casync", "zchunk"}

// ErrToolMissing is returned when casync or zchunk is not installed.
var ErrToolMissing = errors.New("benchpeers: a peer tool is missing")

// Case is one base/target pair.
type Case struct {
	Name   string // file name stem, e.g. "edit-05"
	Label  string // table label, e.g. "edit 5%"
	Kind   testimages.ChangeKind
	Change float64
	Full   bool // an unrelated target: nothing but zeros can be reused

	image string   // target image path
	sum   [32]byte // SHA-256 of the target image
}

// Measure is one run of one tool on one case.
type Measure struct {
	Fetched  int64 // response bytes the server sent
	Requests int64 // requests the server answered
	Wall     time.Duration
	PeakRSS  int64 // bytes: the largest of the tool's processes
}

// Report is the outcome of a run.
type Report struct {
	Size     int64
	Seed     uint64
	Rounds   int
	Cores    int
	Cases    []Case
	Runs     map[string]map[string][]Measure // case name → tool → one per round
	RawLimit []float64                       // bytes/s, one per round
}

type bench struct {
	o     Options
	dir   string
	url   string
	srv   *counter
	cases []Case
	base  string
	disk  string // pristine disk: USR-A holds the base, USR-B empty
	usrB  int64  // byte offset of USR-B in the disk
	raw   *rawLimit
	logMu sync.Mutex
	peers []peer

	payloadID string // short hash of the payload binary

	keysOnce sync.Once
	keysErr  error
}

// Run builds what is missing in o.Dir, runs the rounds and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Rounds <= 0 {
		o.Rounds = DefaultRounds
	}
	if o.Changes == nil {
		o.Changes = DefaultChanges
	}
	if o.Kinds == nil {
		o.Kinds = []testimages.ChangeKind{testimages.ChangeRewrite, testimages.ChangeEdit}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Size%4096 != 0 || o.Size < testimages.MinUsrSize {
		return nil, fmt.Errorf("benchpeers: size %d must be a multiple of 4096 and at least %d", o.Size, testimages.MinUsrSize)
	}
	for _, t := range []string{"casync", "zck", "zckdl", "unzck", timeBin} {
		if _, err := exec.LookPath(t); err != nil {
			return nil, fmt.Errorf("%w: %s not found; install the Debian packages casync, zchunk and time (make bench-peers does as root)", ErrToolMissing, t)
		}
	}
	// The commands run in their own directories: make the paths absolute.
	var err error
	if o.Payload, err = filepath.Abs(o.Payload); err != nil {
		return nil, err
	}
	if o.Dir, err = filepath.Abs(o.Dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(o.Payload); err != nil {
		return nil, fmt.Errorf("benchpeers: the payload binary: %w (build it with make build)", err)
	}
	dir := filepath.Join(o.Dir, fmt.Sprintf("size%d-seed%d", o.Size, o.Seed))
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		return nil, err
	}
	sum, err := hashFile(o.Payload)
	if err != nil {
		return nil, fmt.Errorf("benchpeers: the payload binary: %w", err)
	}
	b := &bench{o: o, dir: dir, payloadID: fmt.Sprintf("%x", sum[:6])}
	b.peers = []peer{twinslotPeer{b}, casyncPeer{b}, zchunkPeer{b}}
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	stop, err := b.serve()
	if err != nil {
		return nil, err
	}
	defer stop()
	return b.rounds(ctx)
}

func (b *bench) logf(format string, args ...any) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Fprintf(b.o.Log, "bench-peers: "+format+"\n", args...)
}

func (b *bench) path(name string) string { return filepath.Join(b.dir, name) }

// prepare builds the images, the disk, the keys and every tool's server-side files.
func (b *bench) prepare(ctx context.Context) error {
	version := func(s string) string { return fmt.Sprintf("bench.%d.%s", b.o.Seed, s) }
	b.base = b.path("base.img")
	if err := b.once(b.base, func(tmp string) error {
		return testimages.BuildUsr(ctx, tmp, testimages.UsrOptions{Version: version("base"), Board: board, Size: b.o.Size})
	}); err != nil {
		return err
	}
	for _, k := range b.o.Kinds {
		for _, ch := range b.o.Changes {
			b.cases = append(b.cases, Case{Name: fmt.Sprintf("%s-%02.0f", k, ch*100), Label: fmt.Sprintf("%s %g%%", k, ch*100), Kind: k, Change: ch})
		}
	}
	b.cases = append(b.cases, Case{Name: "full", Label: "full (unrelated image)", Full: true})
	for i := range b.cases {
		c := &b.cases[i]
		c.image = b.path(c.Name + ".img")
		uo := testimages.UsrOptions{Version: version(c.Name), Board: board, Size: b.o.Size}
		if !c.Full {
			uo.Base, uo.Change, uo.ChangeKind = b.base, c.Change, c.Kind
		}
		if err := b.once(c.image, func(tmp string) error { return testimages.BuildUsr(ctx, tmp, uo) }); err != nil {
			return err
		}
		sum, err := hashRange(c.image, 0, b.o.Size)
		if err != nil {
			return err
		}
		c.sum = sum
	}
	// Slots a third of the disk each (testimages.Layout), at least the image plus 1 MiB.
	diskSize := max(3*b.o.Size+3<<20, testimages.MinDiskSize)
	diskSize = (diskSize + 1<<20 - 1) / (1 << 20) * (1 << 20)
	parts, err := testimages.Layout(diskSize)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if p.Label == "USR-B" {
			b.usrB = p.Start
		}
	}
	b.disk = b.path("disk.img")
	if err := b.once(b.disk, func(tmp string) error {
		return testimages.BuildDisk(ctx, tmp, testimages.DiskOptions{Size: diskSize, Usr: b.base})
	}); err != nil {
		return err
	}
	// The peers' server-side files, two at a time (zck is slow and single-threaded).
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, p := range b.peers {
		for _, c := range b.cases {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := p.prepare(ctx, c); err != nil {
					mu.Lock()
					first = cmp(first, err)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if first != nil {
		return first
	}
	full := b.cases[len(b.cases)-1]
	b.logf("measuring the raw limit on %s", full.image)
	raw, err := newRawLimit(full.image)
	if err != nil {
		return err
	}
	b.raw = raw
	return nil
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// once builds path with build(tmp) unless it exists, then renames tmp to path.
func (b *bench) once(path string, build func(tmp string) error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b.logf("building %s", filepath.Base(path))
	tmp := path + ".tmp"
	os.RemoveAll(tmp)
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("build %s: %w", filepath.Base(path), err)
	}
	return os.Rename(tmp, path)
}

// rounds runs every case with every tool, Rounds times, interleaved.
func (b *bench) rounds(ctx context.Context) (*Report, error) {
	r := &Report{Size: b.o.Size, Seed: b.o.Seed, Rounds: b.o.Rounds, Cores: cores(), Cases: b.cases, Runs: map[string]map[string][]Measure{}}
	for _, c := range b.cases {
		r.Runs[c.Name] = map[string][]Measure{}
	}
	for round := range b.o.Rounds {
		rate, err := b.raw.measure()
		if err != nil {
			return nil, err
		}
		r.RawLimit = append(r.RawLimit, rate)
		b.logf("round %d/%d: raw limit %.0f MB/s", round+1, b.o.Rounds, rate/1e6)
		for ci, c := range b.cases {
			for k := range b.peers {
				p := b.peers[(k+round+ci)%len(b.peers)]
				m, err := b.measure(ctx, p, c)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s, %s: %w", round+1, c.Label, p.name(), err)
				}
				b.logf("round %d/%d %-22s %-8s %8.2f MB %6d requests %6.2f s %6.1f MiB", round+1, b.o.Rounds, c.Label, p.name(),
					float64(m.Fetched)/1e6, m.Requests, m.Wall.Seconds(), float64(m.PeakRSS)/(1<<20))
				r.Runs[c.Name][p.name()] = append(r.Runs[c.Name][p.name()], m)
			}
		}
	}
	return r, nil
}

// measure runs p on c once and checks its output.
func (b *bench) measure(ctx context.Context, p peer, c Case) (Measure, error) {
	scratch := b.path("run")
	if err := os.RemoveAll(scratch); err != nil {
		return Measure{}, err
	}
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return Measure{}, err
	}
	out, off, cmds, err := p.setup(ctx, c, scratch)
	if err != nil {
		return Measure{}, err
	}
	b.srv.reset()
	var m Measure
	for _, argv := range cmds {
		wall, rss, err := runTimed(ctx, scratch, argv)
		if err != nil {
			return Measure{}, err
		}
		m.Wall += wall
		m.PeakRSS = max(m.PeakRSS, rss)
	}
	m.Fetched, m.Requests = b.srv.bytes.Load(), b.srv.reqs.Load()
	got, err := hashRange(out, off, b.o.Size)
	if err != nil {
		return Measure{}, fmt.Errorf("read the output: %w", err)
	}
	if got != c.sum {
		return Measure{}, fmt.Errorf("the output differs from the target image %s", c.image)
	}
	return m, nil
}

// runTimed runs argv in dir and returns its wall time and peak RSS. GNU time runs the command
// and reports its peak: a child started by this process directly would count this process's own
// peak as its floor (Linux carries the parent's high-water mark across fork and exec).
func runTimed(ctx context.Context, dir string, argv []string) (time.Duration, int64, error) {
	rssFile := filepath.Join(dir, ".peak-rss")
	cmd := exec.CommandContext(ctx, timeBin, append([]string{"-f", "%M", "-o", rssFile, "--"}, argv...)...)
	cmd.Dir = dir
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out.String())
	}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		return 0, 0, fmt.Errorf("peak RSS of %s: %w", argv[0], err)
	}
	kib, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("peak RSS of %s: GNU time printed %q", argv[0], b)
	}
	return wall, kib << 10, nil
}

// timeBin is GNU time (Debian package time).
const timeBin = "/usr/bin/time"

// tail keeps the last 4 KiB written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = slices.Clone(t.b[len(t.b)-4096:])
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.b)) }

// hashFile returns the SHA-256 of the file at path.
func hashFile(path string) ([32]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return [32]byte{}, err
	}
	return hashRange(path, 0, st.Size())
}

// hashRange returns the SHA-256 of n bytes of path at off.
func hashRange(path string, off, n int64) ([32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	defer f.Close()
	h := sha256.New()
	if k, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil || k != n {
		return [32]byte{}, fmt.Errorf("%s holds %d of %d bytes at %d: %v", path, k, n, off, err)
	}
	return [32]byte(h.Sum(nil)), nil
}

// counter is the HTTP server: files of dir, counting requests and response bytes.
type counter struct {
	h     http.Handler
	bytes atomic.Int64
	reqs  atomic.Int64
}

func (c *counter) reset() { c.bytes.Store(0); c.reqs.Store(0) }

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.reqs.Add(1)
	c.h.ServeHTTP(countingWriter{w, &c.bytes}, r)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	k, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(k))
	return k, err
}

func (b *bench) serve() (func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b.srv = &counter{h: http.FileServer(http.Dir(b.dir))}
	srv := &http.Server{Handler: b.srv, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	b.url = "http://" + ln.Addr().String()
	return func() { srv.Close() }, nil
}
