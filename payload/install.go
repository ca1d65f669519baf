package payload

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Slot is the target slot: read (to find chunks an interrupted attempt already wrote, and for the
// final read-back) and written. If it also has Sync() error, Install calls it once, after the last
// write and the read-back. If it has StartWriteback(off, n int64), Install calls it for each range
// as soon as it is written, so that the device writes while the install goes on and a resumed
// install after a power cut finds what was written (a hint: it must not wait, and its errors are
// the final Sync's); an *os.File gets this through sync_file_range on Linux.
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
}

// Progress is a snapshot of an install.
type Progress struct {
	Phase   string // "verify", "scan-target", "index-active", "fetch", "rehash", "sync", "done"
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
	// Phases is the time spent in each phase ("verify", "scan-target", "index-active", "fetch",
	// "rehash" (the read-back still running after the last write), "sync").
	Phases map[string]time.Duration
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
	m, err := f.Verify(in.o.Trust, in.o.Expect)
	if err != nil {
		return nil, err
	}
	in.m = m
	meta := int64(HeaderSize) + int64(f.hdr.EnvelopeArea) + int64(f.hdr.TableLen)
	if m.ImageSize > in.dst.Size {
		return nil, reject(ReasonImageTooLarge, "image of %d bytes does not fit the %d-byte slot", m.ImageSize, in.dst.Size)
	}
	in.log.Info("payload verified", "version", m.Version, "board", m.Board, "image_bytes", m.ImageSize, "chunks", len(m.Chunks))

	// From here on the target may be written.
	in.writeback = writebackStarter(in.dst.Slot)
	if in.o.BeforeWrite != nil {
		in.dst.Slot = &hookedSlot{Slot: in.dst.Slot, hook: in.o.BeforeWrite}
	}
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
	// One sync, after the last write (the read-back may have written zero chunks).
	in.setPhase("sync")
	if s, ok := in.dst.Slot.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return nil, fmt.Errorf("sync target slot: %w", err)
		}
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
	}
	in.log.Info("payload installed", "version", m.Version, "reused_target", res.BytesReusedTarget,
		"reused_active", res.BytesReusedActive, "fetched", res.BytesFetched, "written", res.BytesWritten, "duration", res.Duration)
	return res, nil
}

// writeAll puts every chunk in place: kept from the target, copied from the active slot, zero,
// or fetched.
func (in *installer) writeAll(ctx context.Context, dataOff int64) error {
	in.setPhase("scan-target")
	if err := in.scanTarget(ctx); err != nil {
		return err
	}
	if in.dst.Active != nil && in.missing() > 0 {
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
	sums := map[uint32][32]byte{}
	for _, c := range in.m.Chunks {
		if c.Encoding != EncodingZero {
			continue
		}
		sum, ok := sums[c.Length]
		if !ok {
			sum = sha256.Sum256(make([]byte, c.Length))
			sums[c.Length] = sum
		}
		if sum != c.SHA256 {
			return reject(ReasonChunkHash, "zero chunk at %d does not match its signed hash", c.Offset)
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

// parallel runs f(i) for i in [0, n) on the workers, stopping at the first error.
func (in *installer) parallel(ctx context.Context, n int, f func(w, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := range min(in.o.Workers, max(n, 1)) {
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

// scanTarget marks the chunks whose bytes are already at their place in the target. It reads
// only the first ProbeSize bytes of a region whose probe does not match, and nothing of zero
// chunks (the read-back settles them).
func (in *installer) scanTarget(ctx context.Context) error {
	bufs := make([][]byte, in.o.Workers)
	return in.parallel(ctx, len(in.m.Chunks), func(w, i int) error {
		c := in.m.Chunks[i]
		if c.Encoding == EncodingZero {
			return nil
		}
		if bufs[w] == nil {
			bufs[w] = make([]byte, in.m.Chunking.maxLen())
		}
		b := bufs[w][:c.Length]
		p := min(int(c.Length), ProbeSize)
		if err := readFull(in.dst.Slot, b[:p], c.Offset); err != nil {
			return fmt.Errorf("read target slot at %d: %w", c.Offset, err)
		}
		if probe(b[:p]) != c.Probe {
			in.need[i] = true
			return nil
		}
		if err := readFull(in.dst.Slot, b[p:], c.Offset+int64(p)); err != nil {
			return fmt.Errorf("read target slot at %d: %w", c.Offset, err)
		}
		if sha256.Sum256(b) != c.SHA256 {
			in.need[i] = true
			return nil
		}
		in.reusedT.Add(int64(c.Length))
		in.placed.mark(i, crc32.Checksum(b, castagnoli))
		in.addDone(int64(c.Length))
		return nil
	})
}

// copyFromActive cuts the active slot with the manifest's chunking and copies every chunk whose
// hash a missing chunk wants into the target (the hash was just computed over the bytes written).
// The slot is cut in Workers segments in parallel: content-defined boundaries re-synchronise a
// chunk or two after a segment start, so at most a few chunks per segment are missed (and then
// fetched).
func (in *installer) copyFromActive(ctx context.Context) error {
	w := in.newWanted()
	if w.left == 0 {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	w.stop = cancel
	var once sync.Once
	var first error
	fail := func(err error) { once.Do(func() { first = err; cancel() }) }
	segments := int64(in.o.Workers)
	segLen := max(in.dst.ActiveSize/segments, int64(in.m.Chunking.maxLen())*4)
	var wg sync.WaitGroup
	for start := int64(0); start < in.dst.ActiveSize; start += segLen {
		n := min(segLen, in.dst.ActiveSize-start)
		wg.Go(func() {
			if err := in.scanActive(ctx, start, n, w); err != nil && ctx.Err() == nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return parent.Err() // our own early stop (all found) is not an error
}

// wanted is what the active-slot scan looks for: the missing non-zero chunks sorted by hash
// (5 bytes a chunk, no map), and their probes sorted (4 bytes a chunk, read-only).
type wanted struct {
	chunks []Chunk
	byHash []int32  // missing chunk indices sorted by SHA-256
	probes []uint32 // their probes, sorted
	mu     sync.Mutex
	taken  []bool // taken[k]: byHash[k]'s hash was found (guarded by mu)
	left   int    // distinct hashes not yet found (guarded by mu)
	stop   func() // called once nothing is left
}

func (in *installer) newWanted() *wanted {
	chunks := in.m.Chunks
	w := &wanted{chunks: chunks}
	for i, c := range chunks {
		if in.need[i] && c.Encoding != EncodingZero {
			w.byHash = append(w.byHash, int32(i))
			w.probes = append(w.probes, c.Probe)
		}
	}
	slices.SortFunc(w.byHash, func(a, b int32) int { return bytes.Compare(chunks[a].SHA256[:], chunks[b].SHA256[:]) })
	slices.Sort(w.probes)
	w.probes = slices.Compact(w.probes)
	w.taken = make([]bool, len(w.byHash))
	for k := range w.byHash {
		if k == 0 || chunks[w.byHash[k]].SHA256 != chunks[w.byHash[k-1]].SHA256 {
			w.left++
		}
	}
	return w
}

// mayWant reports whether a region with this probe can be a wanted chunk.
func (w *wanted) mayWant(p uint32) bool {
	_, ok := slices.BinarySearch(w.probes, p)
	return ok
}

// take returns the chunks that want sum, once: later calls for the same hash return nothing.
func (w *wanted) take(sum [32]byte) []int32 {
	lo, _ := slices.BinarySearchFunc(w.byHash, sum, func(i int32, s [32]byte) int { return bytes.Compare(w.chunks[i].SHA256[:], s[:]) })
	hi := lo
	for hi < len(w.byHash) && w.chunks[w.byHash[hi]].SHA256 == sum {
		hi++
	}
	if lo == hi {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.taken[lo] {
		return nil
	}
	w.taken[lo] = true
	if w.left--; w.left == 0 && w.stop != nil {
		w.stop() // everything wanted was found; stop reading the active slot
	}
	return w.byHash[lo:hi]
}

// scanActive cuts [start, start+n) of the active slot and copies wanted chunks to the target.
func (in *installer) scanActive(ctx context.Context, start, n int64, w *wanted) error {
	cut, err := in.m.Chunking.newCutter(io.NewSectionReader(in.dst.Active, start, n))
	if err != nil {
		return err
	}
	buf := make([]byte, in.m.Chunking.maxLen())
	for ctx.Err() == nil {
		b, err := cut.Next(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read active slot: %w", err)
		}
		if !w.mayWant(probe(b)) {
			continue // cannot be a wanted chunk; skip the SHA-256
		}
		idx := w.take(sha256.Sum256(b))
		if len(idx) == 0 {
			continue
		}
		crc := crc32.Checksum(b, castagnoli)
		for _, i := range idx {
			c := in.m.Chunks[i]
			if err := in.write(b, c.Offset); err != nil {
				return err
			}
			in.need[i] = false
			in.placed.mark(int(i), crc)
			in.reusedA.Add(int64(c.Length))
			in.addDone(int64(c.Length))
		}
	}
	return nil
}

// hookedSlot runs hook once before the first write.
type hookedSlot struct {
	Slot
	once sync.Once
	hook func() error
	err  error
}

func (h *hookedSlot) WriteAt(p []byte, off int64) (int, error) {
	h.once.Do(func() { h.err = h.hook() })
	if h.err != nil {
		return 0, fmt.Errorf("before writing: %w", h.err)
	}
	return h.Slot.WriteAt(p, off)
}

func (h *hookedSlot) Sync() error {
	if s, ok := h.Slot.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

func (in *installer) write(b []byte, off int64) error {
	if err := in.writeAt(b, off); err != nil {
		return err
	}
	if in.writeback != nil {
		// Hand the bytes to the device now: what an install wrote before a power cut is then
		// on disk for the resumed install to find, instead of lost with the page cache.
		in.writeback(off, int64(len(b)))
	}
	return nil
}

// writeAt writes b at off of the target without starting its writeback.
func (in *installer) writeAt(b []byte, off int64) error {
	if _, err := in.dst.Slot.WriteAt(b, off); err != nil {
		return fmt.Errorf("write target slot at %d: %w", off, err)
	}
	in.written.Add(int64(len(b)))
	return nil
}

// stored is one stored range to fetch and the chunks its decoded bytes become: c is the first
// of them (its stored range, encoding, length and hash are those of all), chunks their indices.
// It holds no copy of the table, so planning a full install of MaxChunks chunks costs about 36
// bytes a chunk.
type stored struct {
	c      *Chunk
	chunks []int32
}

func (s stored) doff() int64 { return s.c.DataOffset }
func (s stored) dlen() int64 { return int64(s.c.DataLength) }

type request struct {
	items []stored
}

func (r request) start() int64 { return r.items[0].doff() }
func (r request) end() int64 {
	last := r.items[len(r.items)-1]
	return last.doff() + last.dlen()
}

// plan groups the missing stored ranges into coalesced requests in data order. Chunks that
// share a stored range (identical content stored once) are fetched once.
func (in *installer) plan() []request {
	chunks := in.m.Chunks
	var order []int32
	for i := range chunks {
		if in.need[i] {
			order = append(order, int32(i))
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		ca, cb := &chunks[a], &chunks[b]
		if c := cmp.Compare(ca.DataOffset, cb.DataOffset); c != 0 {
			return c
		}
		if c := cmp.Compare(ca.DataLength, cb.DataLength); c != 0 {
			return c
		}
		if c := bytes.Compare(ca.SHA256[:], cb.SHA256[:]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	var items []stored
	for lo := 0; lo < len(order); {
		c := &chunks[order[lo]]
		hi := lo + 1
		for hi < len(order) && chunks[order[hi]].DataOffset == c.DataOffset && chunks[order[hi]].DataLength == c.DataLength &&
			chunks[order[hi]].SHA256 == c.SHA256 {
			hi++
		}
		items = append(items, stored{c: c, chunks: order[lo:hi:hi]})
		lo = hi
	}
	var reqs []request
	first := 0
	for k, s := range items {
		if k > first {
			r := request{items: items[first:k]}
			gap := s.doff() - r.end()
			if gap >= 0 && gap <= in.o.MaxGap && s.doff()+s.dlen()-r.start() <= in.o.MaxRequest {
				continue
			}
			reqs = append(reqs, r)
			first = k
		}
	}
	if first < len(items) {
		reqs = append(reqs, request{items: items[first:]})
	}
	return reqs
}

// fetch downloads, decodes, checks and writes every missing stored range.
func (in *installer) fetch(ctx context.Context, dataOff int64) error {
	reqs := in.plan()
	if len(reqs) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan request)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range min(in.o.Parallel, len(reqs)) {
		wg.Go(func() {
			fw, err := in.newFetchWorker()
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
			defer fw.dec.Close()
			for r := range ch {
				if err := fw.fetch(ctx, r, dataOff); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
	for _, r := range reqs {
		select {
		case ch <- r:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(ch)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// Buffer sizes of the install. Together with Parallel they bound its memory: each fetch worker
// holds a read buffer, a write batch and, for chunks larger than the read buffer, a chunk buffer.
const (
	// writeBatchSize bounds how many decoded bytes of neighbouring chunks a fetch worker gathers
	// into one write.
	writeBatchSize = 1 << 20
	// readBufferSize is a fetch worker's read buffer: stored chunks that fit are decoded straight
	// from it (no copy), and a local file is read with one pread per readBufferSize.
	readBufferSize = 1 << 20
	// rehashBufferSize is how much of the target the read-back reads at once.
	rehashBufferSize = 1 << 20
	// writebackBatchSize is the most a fetch worker writes before it starts the writeback.
	writebackBatchSize = 8 << 20
)

// fetchWorker decodes stored ranges and writes neighbouring chunks in batches.
type fetchWorker struct {
	in    *installer
	dec   *zstd.Decoder
	br    *bufio.Reader
	raw   []byte
	one   []byte // decode buffer for chunks written to several places
	batch []byte // decoded bytes for image [batchOff, batchOff+len(batch))
	off   int64
	idx   []int    // chunks in the batch
	crcs  []uint32 // their CRC-32C
	// [wbOff, wbEnd) was written and its writeback not yet started: neighbouring batches are
	// handed to the device together, up to writebackBatchSize, and at the end of each request.
	wbOff, wbEnd int64
}

func (in *installer) newFetchWorker() (*fetchWorker, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunkSize+1),
		zstd.WithDecoderMaxWindow(MaxChunkSize+1))
	if err != nil {
		return nil, err
	}
	return &fetchWorker{in: in, dec: dec, br: bufio.NewReaderSize(nil, readBufferSize),
		batch: make([]byte, 0, max(writeBatchSize, in.m.Chunking.maxLen()))}, nil
}

// countingReader counts bytes read into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// fetch streams one coalesced request; after a cut it re-requests from the first stored range
// not yet decoded, up to Retry.Attempts times without progress.
func (fw *fetchWorker) fetch(ctx context.Context, r request, dataOff int64) error {
	in := fw.in
	rt := retrier{in.o.Retry}
	pos, failures := 0, 0
	for pos < len(r.items) {
		from := r.items[pos].doff()
		body, err := in.src.OpenRange(ctx, dataOff+from, r.end()-from)
		if err != nil {
			return err
		}
		in.requests.Add(1)
		br := fw.br
		br.Reset(countingReader{body, &in.fetched})
		cur := from
		var cut error
		for pos < len(r.items) {
			s := r.items[pos]
			if gap := s.doff() - cur; gap > 0 {
				if _, err := br.Discard(int(gap)); err != nil {
					cut = err
					break
				}
			}
			b, err := fw.next(s.dlen())
			if err != nil {
				cut = err
				break
			}
			err = fw.place(s, b)
			if err == nil && len(b) <= br.Size() {
				_, err = br.Discard(len(b)) // b was peeked from the read buffer
			}
			if err != nil {
				body.Close()
				return err
			}
			cur = s.doff() + s.dlen()
			pos++
			failures = 0
		}
		body.Close()
		if err := fw.flush(); err != nil {
			return err
		}
		if cut == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failures++; failures >= rt.attempts() {
			return fmt.Errorf("download cut %d times at data offset %d: %w", failures, cur, cut)
		}
		in.log.Warn("download cut; resuming", "data_offset", cur, "attempt", failures, "err", cut)
		if err := rt.wait(ctx, failures-1); err != nil {
			return err
		}
	}
	err := fw.flush()
	fw.startWriteback()
	return err
}

// next returns the next n stored bytes: peeked from the read buffer when they fit (valid until
// the buffer is read again; the caller discards them), else read into fw.raw.
func (fw *fetchWorker) next(n int64) ([]byte, error) {
	if n <= int64(fw.br.Size()) {
		return fw.br.Peek(int(n))
	}
	if int64(cap(fw.raw)) < n {
		fw.raw = make([]byte, n)
	}
	b := fw.raw[:n]
	_, err := io.ReadFull(fw.br, b)
	return b, err
}

// decode appends the decoded bytes of s (stored as b) to dst, checks their hash, and returns
// their CRC-32C for the read-back.
func (fw *fetchWorker) decode(dst []byte, s stored, b []byte) ([]byte, uint32, error) {
	n := len(dst)
	if s.c.Encoding == EncodingZstd {
		d, err := fw.dec.DecodeAll(b, dst)
		if err != nil || len(d)-n != int(s.c.Length) {
			return dst, 0, rejectErr(ReasonChunkHash, err, "chunk at data offset %d does not decode to its %d bytes", s.doff(), s.c.Length)
		}
		dst = d
	} else {
		dst = append(dst, b...)
	}
	if sha256.Sum256(dst[n:]) != s.c.SHA256 {
		return dst[:n], 0, reject(ReasonChunkHash, "chunk at data offset %d does not match its signed hash; the payload or the server is corrupt", s.doff())
	}
	return dst, crc32.Checksum(dst[n:], castagnoli), nil
}

// place decodes and checks s, then adds it to the write batch (or writes it to each of its
// chunks when it is stored once for several).
func (fw *fetchWorker) place(s stored, b []byte) error {
	if len(s.chunks) == 1 {
		c := fw.in.m.Chunks[s.chunks[0]]
		if len(fw.batch) > 0 && (fw.off+int64(len(fw.batch)) != c.Offset || cap(fw.batch)-len(fw.batch) < int(c.Length)) {
			if err := fw.flush(); err != nil {
				return err
			}
		}
		if len(fw.batch) == 0 {
			fw.off = c.Offset
		}
		var err error
		var crc uint32
		if fw.batch, crc, err = fw.decode(fw.batch, s, b); err != nil {
			return err
		}
		fw.idx = append(fw.idx, int(s.chunks[0]))
		fw.crcs = append(fw.crcs, crc)
		return nil
	}
	d, crc, err := fw.decode(fw.one[:0], s, b)
	if err != nil {
		return err
	}
	fw.one = d
	for _, i := range s.chunks {
		if err := fw.in.write(d, fw.in.m.Chunks[i].Offset); err != nil {
			return err
		}
		fw.in.placed.mark(int(i), crc)
		fw.in.addDone(int64(len(d)))
	}
	return nil
}

// flush writes the batch (only checked chunks are ever in it).
func (fw *fetchWorker) flush() error {
	if len(fw.batch) == 0 {
		return nil
	}
	if err := fw.in.writeAt(fw.batch, fw.off); err != nil {
		return err
	}
	fw.wrote(fw.off, int64(len(fw.batch)))
	for k, i := range fw.idx {
		fw.in.placed.mark(i, fw.crcs[k])
	}
	fw.in.addDone(int64(len(fw.batch)))
	fw.batch, fw.idx, fw.crcs = fw.batch[:0], fw.idx[:0], fw.crcs[:0]
	return nil
}

// wrote records that [off, off+n) was written, starting the writeback of what came before when
// it is not adjacent, or of the whole range once it reaches writebackBatchSize.
func (fw *fetchWorker) wrote(off, n int64) {
	if fw.wbEnd > fw.wbOff && off != fw.wbEnd {
		fw.startWriteback()
	}
	if fw.wbEnd == fw.wbOff {
		fw.wbOff, fw.wbEnd = off, off
	}
	fw.wbEnd += n
	if fw.wbEnd-fw.wbOff >= writebackBatchSize {
		fw.startWriteback()
	}
}

// startWriteback hands the written range not yet started to the device (see Slot): what an
// install wrote before a power cut is then on disk for the resumed install to find.
func (fw *fetchWorker) startWriteback() {
	if fw.wbEnd > fw.wbOff && fw.in.writeback != nil {
		fw.in.writeback(fw.wbOff, fw.wbEnd-fw.wbOff)
	}
	fw.wbOff, fw.wbEnd = 0, 0
}

// placement tracks which chunks are in place in the target, and the CRC-32C of the bytes each
// was written with (bytes whose SHA-256 had matched), for the trailing read-back check.
type placement struct {
	mu      sync.Mutex
	cond    *sync.Cond
	done    []atomic.Bool
	crc     []uint32 // crc[i] is written before done[i] is set, and read only after
	stopped bool
}

func newPlacement(n int) *placement {
	p := &placement{done: make([]atomic.Bool, n), crc: make([]uint32, n)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// mark records that chunk i is in place, written from (or found as) bytes with CRC-32C crc.
func (p *placement) mark(i int, crc uint32) {
	p.crc[i] = crc
	p.done[i].Store(true)
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *placement) stop() {
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// wait blocks until chunk i is in place; false when stopped.
func (p *placement) wait(i int) bool {
	if p.done[i].Load() {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.done[i].Load() && !p.stopped {
		p.cond.Wait()
	}
	return !p.stopped
}

// errRehashStopped is the read-back's answer when the writes failed or the install was cancelled.
var errRehashStopped = errors.New("read-back stopped")

// rehash is the final check. It trails the writes: it reads back [0, imageSize) of the target
// in image order, each chunk once it is in place, and compares each chunk with the bytes it was
// written from, whose SHA-256 had matched the signed table (by their CRC-32C: this pass looks for
// a device or a bug that lost or misplaced writes, not for forgeries, so it need not hash every
// byte with SHA-256 a second time). Zero chunks are settled here: kept if all zero, else written
// and read back again. With InstallOptions.RehashImage it also hashes the whole slot with SHA-256
// and compares it with the manifest's image hash.
func (in *installer) rehash(ctx context.Context) error {
	bufLen := max(rehashBufferSize, in.m.Chunking.maxLen())
	if in.o.RehashImage {
		// One goroutine: the image hash needs the bytes in order.
		h := sha256.New()
		buf := make([]byte, bufLen)
		err := in.eachSpan(ctx, bufLen, func(i, j int) error {
			b, err := in.checkSpan(buf, i, j)
			h.Write(b)
			return err
		})
		if err != nil {
			return err
		}
		var got Digest
		copy(got[:], h.Sum(nil))
		if got != in.m.ImageSHA256 {
			return reject(ReasonImageHash, "slot holds %s after install, manifest says %s; the slot device may be failing", got, in.m.ImageSHA256)
		}
		return nil
	}
	// The chunk checks need no order: spans go to Workers readers, so the read-back still to do
	// after the last write runs on every core.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	spans := make(chan [2]int, in.o.Workers)
	errs := make(chan error, in.o.Workers)
	for range in.o.Workers {
		go func() {
			buf := make([]byte, bufLen)
			for s := range spans {
				if _, err := in.checkSpan(buf, s[0], s[1]); err != nil {
					cancel()
					in.placed.stop() // wakes the span producer if it waits for a chunk
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	err := in.eachSpan(ctx, bufLen, func(i, j int) error {
		select {
		case spans <- [2]int{i, j}:
			return nil
		case <-ctx.Done():
			return errRehashStopped
		}
	})
	close(spans)
	for range in.o.Workers {
		if werr := <-errs; werr != nil && (err == nil || errors.Is(err, errRehashStopped)) {
			err = werr // a reader's own failure explains a stop
		}
	}
	return err
}

// eachSpan calls f(i, j) for consecutive runs of chunks [i, j) in image order, each as soon as
// its chunks are in place, spanning at most bufLen bytes (or one chunk).
func (in *installer) eachSpan(ctx context.Context, bufLen int, f func(i, j int) error) error {
	chunks := in.m.Chunks
	for i := 0; i < len(chunks); {
		if !in.placed.wait(i) || ctx.Err() != nil {
			return errRehashStopped
		}
		start := chunks[i].Offset
		j := i + 1
		for j < len(chunks) && in.placed.done[j].Load() && chunks[j].Offset+int64(chunks[j].Length)-start <= int64(bufLen) {
			j++
		}
		if err := f(i, j); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// checkSpan reads chunks [i, j) back from the target into buf, checks each, and returns the
// bytes read.
func (in *installer) checkSpan(buf []byte, i, j int) ([]byte, error) {
	chunks := in.m.Chunks
	start := chunks[i].Offset
	end := chunks[j-1].Offset + int64(chunks[j-1].Length)
	b := buf[:end-start]
	if err := readFull(in.dst.Slot, b, start); err != nil {
		return nil, fmt.Errorf("re-read target slot at %d: %w", start, err)
	}
	for k := i; k < j; k++ {
		c := chunks[k]
		if err := in.checkBack(k, b[c.Offset-start:c.Offset-start+int64(c.Length)]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// checkBack checks chunk i as read back from the target (b). A zero chunk that is not all zero
// is written (b is zeroed) and read back again.
func (in *installer) checkBack(i int, b []byte) error {
	c := in.m.Chunks[i]
	if c.Encoding != EncodingZero {
		if crc32.Checksum(b, castagnoli) != in.placed.crc[i] {
			return reject(ReasonImageHash, "the slot reads back other bytes at %d than were written there; the slot device may be failing", c.Offset)
		}
		return nil
	}
	if allZero(b) {
		in.zero.Add(int64(len(b))) // zeros found in place; an empty target is not "reused"
		in.addDone(int64(len(b)))
		return nil
	}
	clear(b)
	if err := in.write(b, c.Offset); err != nil {
		return err
	}
	if err := readFull(in.dst.Slot, b, c.Offset); err != nil {
		return fmt.Errorf("re-read target slot at %d: %w", c.Offset, err)
	}
	if !allZero(b) {
		return reject(ReasonImageHash, "the slot reads back other bytes at %d than the zeros written there; the slot device may be failing", c.Offset)
	}
	in.zero.Add(int64(len(b)))
	in.addDone(int64(len(b)))
	return nil
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

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
