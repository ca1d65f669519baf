package payload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Slot is the target slot: read (to find chunks an interrupted attempt already wrote, and for the
// final read-back) and written. If it also has Sync() error, Install calls it after the last
// write and the read-back, and also while it writes, from another goroutine, every 64 MiB
// written (an error of any call fails the install). If it has StartWriteback(off, n int64),
// Install calls it for each range as soon as it is written, so that the device writes while the
// install goes on and a resumed install after a power cut finds what was written (a hint: it
// must not wait, and its errors are the final Sync's); an *os.File gets this through
// sync_file_range on Linux.
type Slot interface {
	io.ReaderAt
	io.WriterAt
}

// writebackSlot is a Slot that can start writing a range to its device (see Slot).
type writebackSlot interface {
	StartWriteback(off, n int64)
}

// writebackStarter returns how to start writing a checked range of the slot to its device: the
// slot's own StartWriteback, else sync_file_range for a file, else nil. Started early, the device
// writes while the install goes on, the final Sync has little left to do, and an install does not
// leave a slot's worth of dirty pages in memory.
func writebackStarter(s Slot) func(off, n int64) {
	if w, ok := s.(writebackSlot); ok {
		return w.StartWriteback
	}
	return fileWriteback(s)
}

// Target is where Install writes, and what it may reuse.
type Target struct {
	Slot Slot
	Size int64 // bytes the slot holds; a larger image is refused
	// Active is the running slot, read-only; nil disables reuse from it.
	Active     io.ReaderAt
	ActiveSize int64
	// ActiveVersion is the version the active slot runs (its os-release VERSION_ID). When the
	// payload carries a delta section built from that version, Install fetches only that
	// section; "" disables delta sections.
	ActiveVersion string
}

// Progress is a snapshot of an install.
type Progress struct {
	Phase   string // "verify", "scan-target", "index-active", "delta-local", "fetch", "rehash", "sync", "done"
	Done    int64  // image bytes in place so far
	Total   int64  // image size
	Reused  int64  // image bytes found in the target or the active slot
	Fetched int64  // payload bytes downloaded (stored, compressed)
	Written int64  // bytes written to the target
	Rate    float64
	ETA     time.Duration
}

// InstallOptions tune Install. Trust is required.
type InstallOptions struct {
	Trust  *TrustRoot
	Expect Expect
	// Progress, if set, is called at most every ProgressInterval and once per phase change,
	// synchronously from the install's goroutines (one at a time): keep it fast.
	Progress         func(Progress)
	ProgressInterval time.Duration // default 200ms
	Logger           *slog.Logger  // default: discard
	Retry            Retry
	MaxRequest       int64 // largest coalesced Range request; default 8 MiB
	MaxGap           int64 // unneeded stored bytes a request may read through to join neighbours; default 64 KiB
	Parallel         int   // requests in flight; default 4
	Workers          int   // hashing workers; default GOMAXPROCS
	Now              func() time.Time
	// RehashImage makes the final read-back also hash the whole slot with SHA-256 and compare it
	// with the manifest's image hash. Off by default: every chunk's SHA-256 already matched the
	// signed table before it was written, and the read-back compares each chunk with what was
	// written (CRC-32C); this second SHA-256 pass over every byte costs about as much CPU as the
	// first.
	RehashImage bool
	// BeforeWrite, if set, runs once, after verification, right before the first write to the
	// target (never when nothing needs writing). 'payload apply' uses it to mark the slot
	// unbootable (partition BeginInstall) only when it is really about to change; an error
	// aborts the install with nothing written.
	BeforeWrite func() error
	// NoDelta makes Install ignore the payload's delta sections (the chunk path only).
	NoDelta bool
}

// Result summarises a finished install.
type Result struct {
	Manifest          *Manifest
	BytesReusedTarget int64 // non-zero chunks already in place in the target (interrupted attempt)
	BytesReusedActive int64 // copied from the active slot
	BytesZero         int64 // zero chunks: kept where the target held zeros, else written; never fetched
	BytesFetched      int64 // data-section bytes downloaded (incl. gaps read through)
	BytesMetadata     int64 // header, envelope and chunk table
	BytesWritten      int64 // bytes written to the target
	Requests          int   // every Range request (or read of a file): size probe, header, envelope, table and data
	Duration          time.Duration
	// Phases is the time spent in each phase ("verify", "scan-target" (with the sampling of the
	// active slot beside it), "index-active" (only when the samples found the payload's chunks
	// there), "fetch", "rehash" (the read-back still running after the last write), "sync").
	Phases map[string]time.Duration
	// DeltaBase is the base version whose delta section was installed; "" for the chunk path.
	DeltaBase string
	// DeltaFallback says why a delta section was abandoned for the chunk path, if it was.
	DeltaFallback string
}

// BytesReused is the image bytes that needed no download.
func (r *Result) BytesReused() int64 { return r.BytesReusedTarget + r.BytesReusedActive }

// Install verifies the payload from src and writes its image into dst.Slot, reusing what dst
// already holds. See the package documentation for the order of work and the guarantees.
func Install(ctx context.Context, src Source, dst Target, o InstallOptions) (*Result, error) {
	if o.Trust == nil {
		return nil, errors.New("install: no trust root given (refusing to install unverified data)")
	}
	if src.src == nil || dst.Slot == nil {
		return nil, errors.New("install: no source or no target slot")
	}
	in := newInstaller(src.src, dst, o)
	res, err := in.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("install from %s: %w", src.src, err)
	}
	return res, nil
}

type installer struct {
	src byteSource
	dst Target
	o   InstallOptions
	log *slog.Logger
	m   *Manifest

	need      []bool             // need[i]: chunk i is not yet in place
	writeback func(off, n int64) // starts writing a checked range to the device; nil if unsupported
	bg        *bgSync            // syncs the target while the install goes on; nil if it has no Sync
	placed    *placement
	start     time.Time

	mu       sync.Mutex
	phase    string
	phaseAt  time.Time
	phases   map[string]time.Duration
	lastRep  time.Time
	done     atomic.Int64
	reusedT  atomic.Int64
	reusedA  atomic.Int64
	zero     atomic.Int64
	fetched  atomic.Int64
	written  atomic.Int64
	requests atomic.Int64
}

func newInstaller(src byteSource, dst Target, o InstallOptions) *installer {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = 8 << 20
	}
	if o.MaxGap < 0 {
		o.MaxGap = 0
	} else if o.MaxGap == 0 {
		o.MaxGap = 64 << 10
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if hs, ok := src.(*httpSource); ok {
		hs.retry = retrier{o.Retry}
	}
	return &installer{src: src, dst: dst, o: o, log: o.Logger}
}

func (in *installer) run(ctx context.Context) (*Result, error) {
	in.start = in.o.Now()
	in.setPhase("verify")
	if err := in.src.prepare(ctx); err != nil {
		return nil, err
	}
	if _, ok := in.src.(*httpSource); ok {
		in.requests.Add(1) // the size probe
	}
	f, err := openSource(ctx, in.src, &in.requests)
	if err != nil {
		return nil, err
	}
	m, err := f.verifyManifest(in.o.Trust, in.o.Expect)
	if err != nil {
		return nil, err
	}
	in.m = m
	if m.ImageSize > in.dst.Size {
		return nil, reject(ReasonImageTooLarge, "image of %d bytes does not fit the %d-byte slot", m.ImageSize, in.dst.Size)
	}
	in.writeback = writebackStarter(in.dst.Slot)
	if in.o.BeforeWrite != nil {
		in.dst.Slot = &hookedSlot{Slot: in.dst.Slot, hook: in.o.BeforeWrite}
	}
	if s, ok := in.dst.Slot.(interface{ Sync() error }); ok {
		in.bg = startBgSync(s.Sync)
		defer in.bg.stop()
	}
	var fallback string
	if d, ok := in.pickDelta(m); ok {
		// The delta path needs no chunk table. From here on the target may be written.
		meta, err := in.runDelta(ctx, f, d)
		switch {
		case err == nil:
			return in.finish(ctx, meta, d.BaseVersion, "")
		case !errors.Is(err, errDeltaSource):
			return nil, err
		}
		fallback = err.Error()
		in.log.Warn("delta section abandoned, installing by chunks", "base", d.BaseVersion, "err", err)
		in.setPhase("verify")
		// The chunk path counts the image again; bytes fetched and written stay counted.
		in.done.Store(0)
		in.reusedT.Store(0)
		in.reusedA.Store(0)
		in.zero.Store(0)
	}
	if err := f.readTable(m); err != nil {
		return nil, err
	}
	meta := int64(HeaderSize) + int64(f.hdr.EnvelopeArea) + int64(f.hdr.TableLen)
	in.log.Info("payload verified", "version", m.Version, "board", m.Board, "image_bytes", m.ImageSize, "chunks", len(m.Chunks))

	// From here on the target may be written.
	in.need = make([]bool, len(m.Chunks))
	in.placed = newPlacement(len(m.Chunks))
	if err := in.checkZeroChunks(); err != nil {
		return nil, err
	}
	// Zero chunks are settled by the read-back below, which reads every byte anyway: it keeps
	// those that are already zero and writes the others.
	for i, c := range m.Chunks {
		if c.Encoding == EncodingZero {
			in.placed.mark(i, 0)
		}
	}
	// The final read-back trails the writes: it reads back and checks the target in image order
	// as soon as each chunk is in place, on its own goroutine, and finishes after the last write.
	// Its failure stops the writes.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	hashed := make(chan error, 1)
	go func() {
		err := in.rehash(wctx)
		if err != nil {
			wcancel()
		}
		hashed <- err
	}()
	if err := in.writeAll(wctx, f.hdr.dataOffset()); err != nil {
		wcancel()
		in.placed.stop()
		if herr := <-hashed; herr != nil && ctx.Err() == nil && !errors.Is(herr, errRehashStopped) {
			return nil, herr // the read-back failed first; the writes only stopped because of it
		}
		return nil, err
	}
	in.setPhase("rehash")
	if err := <-hashed; err != nil {
		return nil, err
	}
	return in.finish(ctx, meta, "", fallback)
}

// finish waits for the background syncs, syncs the target after the last write and check, and
// sums the install up.
func (in *installer) finish(ctx context.Context, meta int64, deltaBase, fallback string) (*Result, error) {
	m := in.m
	if deltaBase != "" && in.o.RehashImage {
		in.setPhase("rehash")
		if err := in.rehashImage(ctx); err != nil {
			return nil, err
		}
	}
	// The last sync, after the last write (the read-back may have written zero chunks); the
	// background syncs made the rest durable while the install went on.
	in.setPhase("sync")
	if err := in.bg.finish(); err != nil {
		return nil, fmt.Errorf("sync target slot: %w", err)
	}
	in.setPhase("done")
	res := &Result{
		Manifest:          m,
		BytesReusedTarget: in.reusedT.Load(),
		BytesReusedActive: in.reusedA.Load(),
		BytesZero:         in.zero.Load(),
		BytesFetched:      in.fetched.Load(),
		BytesMetadata:     meta,
		BytesWritten:      in.written.Load(),
		Requests:          int(in.requests.Load()),
		Duration:          in.o.Now().Sub(in.start),
		Phases:            in.phases,
		DeltaBase:         deltaBase,
		DeltaFallback:     fallback,
	}
	attrs := []any{"version", m.Version, "reused_target", res.BytesReusedTarget,
		"reused_active", res.BytesReusedActive, "fetched", res.BytesFetched, "written", res.BytesWritten, "duration", res.Duration}
	if deltaBase != "" {
		attrs = append(attrs, "delta", deltaBase)
	}
	if fallback != "" {
		attrs = append(attrs, "delta_fallback", fallback)
	}
	in.log.Info("payload installed", attrs...)
	return res, nil
}

// writeAll puts every chunk in place: kept from the target, copied from the active slot, zero,
// or fetched.
func (in *installer) writeAll(ctx context.Context, dataOff int64) error {
	// The active slot's sampling only reads, so it runs beside the scan of the target, in the
	// same phase.
	in.setPhase("scan-target")
	type sample struct {
		skip bool // no active slot, or one that holds an unrelated image: not indexed
		err  error
	}
	sampled := make(chan sample, 1)
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	if in.dst.Active != nil {
		go func() {
			u, err := in.sampleActive(sctx)
			sampled <- sample{u, err}
		}()
	} else {
		sampled <- sample{skip: true}
	}
	err := in.scanTarget(ctx)
	if err != nil {
		scancel()
	}
	s := <-sampled
	switch {
	case err != nil:
		return err
	case s.err != nil:
		return s.err
	}
	if !s.skip && in.missing() > 0 {
		in.setPhase("index-active")
		if err := in.copyFromActive(ctx); err != nil {
			return err
		}
	}
	in.setPhase("fetch")
	return in.fetch(ctx, dataOff)
}

// checkZeroChunks refuses a table whose zero chunks carry a hash other than that of zeros, so
// that "all zero" can stand for "hash matches" afterwards.
func (in *installer) checkZeroChunks() error {
	return checkZeroSums("zero chunk", in.m.Chunks, func(c *Chunk) (bool, int64, uint32, [32]byte) {
		return c.Encoding == EncodingZero, c.Offset, c.Length, c.SHA256
	})
}

// checkZeroSums refuses, by the image offset of the shortest, the extents of a signed table
// (named what; ext tells of each whether it is stored as zeros, where it is, its length and
// signed hash) stored as zeros whose signed hash is not that of zeros. It goes through them from
// the shortest, so it hashes as many zeros as the longest once, whatever their lengths.
func checkZeroSums[T any](what string, table []T, ext func(*T) (zero bool, off int64, length uint32, sum [32]byte)) error {
	var zeros []int32 // 4 bytes an extent: a table may hold 2^20 of them
	for i := range table {
		if z, _, _, _ := ext(&table[i]); z {
			zeros = append(zeros, int32(i))
		}
	}
	length := func(i int32) uint32 { _, _, n, _ := ext(&table[i]); return n }
	slices.SortFunc(zeros, func(a, b int32) int { return cmp.Compare(length(a), length(b)) })
	var h zeroHasher
	var sum [32]byte
	for _, i := range zeros {
		_, off, n, want := ext(&table[i])
		if n != h.n || h.h == nil {
			h.hashTo(n)
			sum = h.sum()
		}
		if sum != want {
			return reject(ReasonChunkHash, "%s at %d does not match its signed hash", what, off)
		}
	}
	return nil
}

func (in *installer) missing() int {
	n := 0
	for _, b := range in.need {
		if b {
			n++
		}
	}
	return n
}

// parallel runs f(w, i) for i in [0, n) on the install's workers (see parallelFor).
func (in *installer) parallel(ctx context.Context, n int, f func(w, i int) error) error {
	return parallelFor(ctx, in.o.Workers, n, f)
}

// parallelFor runs f(w, i) for i in [0, n) on at most workers goroutines (w is the goroutine's
// number, for per-worker state), stopping at the first error, which it returns; a cancelled
// ctx stops it with ctx's error.
func parallelFor(ctx context.Context, workers, n int, f func(w, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := range min(workers, max(n, 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(w, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// Buffer sizes of the install. Together with Parallel they bound its memory: each fetch worker
// holds a read buffer, a write batch and, for chunks larger than the read buffer, a chunk buffer.
const (
	// writeBatchSize bounds how many decoded bytes of neighbouring chunks a fetch worker gathers
	// into one write (a batch holds at least the chunking's largest chunk). Small enough that a
	// batch is still in the core's cache when it is hashed, checksummed and copied into the page
	// cache: with 1 MiB batches a 2 GiB install usually took 20-30% more CPU and ran at
	// 0.50-0.60 of the raw limit instead of 0.58-0.73 (BenchmarkApply, interleaved rounds).
	writeBatchSize = 256 << 10
	// readBufferSize is a fetch worker's read buffer: stored chunks that fit are decoded straight
	// from it (no copy), and a local file is read with one pread per readBufferSize.
	readBufferSize = 1 << 20
	// rehashBufferSize is how much of the target the read-back reads at once.
	rehashBufferSize = 1 << 20
	// writebackBatchSize is the most a fetch worker writes before it starts the writeback.
	writebackBatchSize = 8 << 20
)

func (in *installer) setPhase(p string) {
	in.mu.Lock()
	now := in.o.Now()
	if in.phase != "" {
		if in.phases == nil {
			in.phases = map[string]time.Duration{}
		}
		in.phases[in.phase] += now.Sub(in.phaseAt)
	}
	in.phase, in.phaseAt = p, now
	in.mu.Unlock()
	in.report(true)
}

func (in *installer) addDone(n int64) {
	in.done.Add(n)
	in.report(false)
}

func (in *installer) report(force bool) {
	if in.o.Progress == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	now := in.o.Now()
	if !force && now.Sub(in.lastRep) < in.o.ProgressInterval {
		return
	}
	in.lastRep = now
	p := Progress{
		Phase: in.phase, Done: in.done.Load(), Reused: in.reusedT.Load() + in.reusedA.Load(),
		Fetched: in.fetched.Load(), Written: in.written.Load(),
	}
	if in.m != nil {
		p.Total = in.m.ImageSize
	}
	if el := now.Sub(in.start).Seconds(); el > 0 {
		p.Rate = float64(p.Done) / el
		if p.Rate > 0 && p.Total > p.Done {
			p.ETA = time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
		}
	}
	in.o.Progress(p)
}
