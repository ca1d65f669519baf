package payload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
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
// final re-hash) and written. If it also has Sync() error, Install calls it before the re-hash.
type Slot interface {
	io.ReaderAt
	io.WriterAt
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
	Phase   string // "verify", "scan-target", "index-active", "fetch", "rehash", "done"
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
	// Progress, if set, is called at most every ProgressInterval and once per phase change.
	Progress         func(Progress)
	ProgressInterval time.Duration // default 200ms
	Logger           *slog.Logger  // default: discard
	Retry            Retry
	MaxRequest       int64 // largest coalesced Range request; default 8 MiB
	MaxGap           int64 // unneeded stored bytes a request may read through to join neighbours; default 64 KiB
	Parallel         int   // requests in flight; default 4
	Workers          int   // hashing workers; default GOMAXPROCS
	Now              func() time.Time
	// BeforeWrite, if set, runs once, after verification, right before the first write to the
	// target (never when nothing needs writing). 'payload apply' uses it to mark the slot
	// unbootable (partition BeginInstall) only when it is really about to change; an error
	// aborts the install with nothing written.
	BeforeWrite func() error
}

// Result summarises a finished install.
type Result struct {
	Manifest          *Manifest
	BytesReusedTarget int64 // already in place in the target (interrupted attempt)
	BytesReusedActive int64 // copied from the active slot
	BytesZero         int64 // zero chunks written without fetching
	BytesFetched      int64 // data-section bytes downloaded (incl. gaps read through)
	BytesMetadata     int64 // header, envelope and chunk table
	BytesWritten      int64 // bytes written to the target
	Requests          int   // data Range requests (or reads of a file)
	Duration          time.Duration
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

	need  []bool // need[i]: chunk i is not yet in place
	start time.Time

	mu       sync.Mutex
	phase    string
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
	f, err := openSource(ctx, in.src)
	if err != nil {
		return nil, err
	}
	m, err := f.Verify(in.o.Trust, in.o.Expect)
	if err != nil {
		return nil, err
	}
	in.m = m
	meta := int64(HeaderSize) + int64(f.hdr.EnvelopeLen) + int64(f.hdr.TableLen)
	if m.ImageSize > in.dst.Size {
		return nil, reject(ReasonImageTooLarge, "image of %d bytes does not fit the %d-byte slot", m.ImageSize, in.dst.Size)
	}
	in.log.Info("payload verified", "version", m.Version, "board", m.Board, "image_bytes", m.ImageSize, "chunks", len(m.Chunks))

	// From here on the target may be written.
	if in.o.BeforeWrite != nil {
		in.dst.Slot = &hookedSlot{Slot: in.dst.Slot, hook: in.o.BeforeWrite}
	}
	in.need = make([]bool, len(m.Chunks))
	in.setPhase("scan-target")
	if err := in.scanTarget(ctx); err != nil {
		return nil, err
	}
	if in.dst.Active != nil && in.missing() > 0 {
		in.setPhase("index-active")
		if err := in.copyFromActive(ctx); err != nil {
			return nil, err
		}
	}
	in.setPhase("fetch")
	if err := in.writeZeros(ctx); err != nil {
		return nil, err
	}
	if err := in.fetch(ctx, f.hdr.dataOffset()); err != nil {
		return nil, err
	}
	in.setPhase("rehash")
	if err := in.rehash(ctx); err != nil {
		return nil, err
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
	}
	in.log.Info("payload installed", "version", m.Version, "reused_target", res.BytesReusedTarget,
		"reused_active", res.BytesReusedActive, "fetched", res.BytesFetched, "written", res.BytesWritten, "duration", res.Duration)
	return res, nil
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

// scanTarget marks the chunks whose bytes are already at their place in the target.
func (in *installer) scanTarget(ctx context.Context) error {
	bufs := make([][]byte, in.o.Workers)
	return in.parallel(ctx, len(in.m.Chunks), func(w, i int) error {
		c := in.m.Chunks[i]
		if bufs[w] == nil {
			bufs[w] = make([]byte, in.m.Chunking.maxLen())
		}
		b := bufs[w][:c.Length]
		if err := readFull(in.dst.Slot, b, c.Offset); err != nil {
			return fmt.Errorf("read target slot at %d: %w", c.Offset, err)
		}
		// A zero-filled region cannot hold a non-zero chunk; skip the hash.
		if (c.Encoding != EncodingZero && allZero(b)) || sha256.Sum256(b) != c.SHA256 {
			in.need[i] = true
			return nil
		}
		in.reusedT.Add(int64(c.Length))
		in.addDone(int64(c.Length))
		return nil
	})
}

// copyFromActive cuts the active slot with the manifest's chunking and copies every chunk whose
// hash a missing chunk wants into the target (the hash was just computed over the bytes written).
func (in *installer) copyFromActive(ctx context.Context) error {
	wanted := map[[32]byte][]int{}
	for i, c := range in.m.Chunks {
		if in.need[i] && c.Encoding != EncodingZero {
			wanted[c.SHA256] = append(wanted[c.SHA256], i)
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	cut, err := in.m.Chunking.newCutter(io.NewSectionReader(in.dst.Active, 0, in.dst.ActiveSize))
	if err != nil {
		return err
	}
	parent := ctx
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	maxLen := in.m.Chunking.maxLen()
	free := make(chan []byte, 2*in.o.Workers)
	for range cap(free) {
		free <- make([]byte, maxLen)
	}
	jobs := make(chan []byte, in.o.Workers)
	var mu sync.Mutex
	var once sync.Once
	var first error
	fail := func(err error) { once.Do(func() { first = err; cancel() }) }
	var wg sync.WaitGroup
	for range in.o.Workers {
		wg.Go(func() {
			for b := range jobs {
				sum := sha256.Sum256(b)
				mu.Lock()
				idx := wanted[sum]
				delete(wanted, sum)
				left := len(wanted)
				mu.Unlock()
				for _, i := range idx {
					c := in.m.Chunks[i]
					if err := in.write(b, c.Offset); err != nil {
						fail(err)
						break
					}
					in.need[i] = false
					in.reusedA.Add(int64(c.Length))
					in.addDone(int64(c.Length))
				}
				if left == 0 && len(idx) > 0 {
					cancel() // everything wanted was found; stop reading the active slot
				}
				free <- b
			}
		})
	}
	var readErr error
	for ctx.Err() == nil {
		var b []byte
		select {
		case b = <-free:
		case <-ctx.Done():
		}
		if b == nil {
			break
		}
		data, err := cut.Next(b[:maxLen])
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("read active slot: %w", err)
			break
		}
		jobs <- data
	}
	close(jobs)
	wg.Wait()
	switch {
	case first != nil:
		return first
	case readErr != nil:
		return readErr
	}
	return parent.Err() // our own early stop (all found) is not an error
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
	if _, err := in.dst.Slot.WriteAt(b, off); err != nil {
		return fmt.Errorf("write target slot at %d: %w", off, err)
	}
	in.written.Add(int64(len(b)))
	return nil
}

// writeZeros writes the missing zero chunks after checking the table's hash of them.
func (in *installer) writeZeros(ctx context.Context) error {
	sums := map[uint32][32]byte{}
	var zeros []byte
	for i, c := range in.m.Chunks {
		if !in.need[i] || c.Encoding != EncodingZero {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if int(c.Length) > len(zeros) {
			zeros = make([]byte, c.Length)
		}
		sum, ok := sums[c.Length]
		if !ok {
			sum = sha256.Sum256(zeros[:c.Length])
			sums[c.Length] = sum
		}
		if sum != c.SHA256 {
			return reject(ReasonChunkHash, "zero chunk at %d does not match its signed hash", c.Offset)
		}
		if err := in.write(zeros[:c.Length], c.Offset); err != nil {
			return err
		}
		in.need[i] = false
		in.zero.Add(int64(c.Length))
		in.addDone(int64(c.Length))
	}
	return nil
}

// stored is one stored range to fetch and the image offsets its decoded bytes go to.
type stored struct {
	doff, dlen int64
	enc        Encoding
	length     uint32
	sum        [32]byte
	targets    []int64
}

type request struct {
	items []*stored
}

func (r request) start() int64 { return r.items[0].doff }
func (r request) end() int64 {
	last := r.items[len(r.items)-1]
	return last.doff + last.dlen
}

// plan groups the missing stored ranges into coalesced requests in data order.
func (in *installer) plan() []request {
	type key struct {
		doff int64
		sum  [32]byte
	}
	byKey := map[key]*stored{}
	var items []*stored
	for i, c := range in.m.Chunks {
		if !in.need[i] {
			continue
		}
		k := key{c.DataOffset, c.SHA256}
		s := byKey[k]
		if s == nil {
			s = &stored{doff: c.DataOffset, dlen: int64(c.DataLength), enc: c.Encoding, length: c.Length, sum: c.SHA256}
			byKey[k] = s
			items = append(items, s)
		}
		s.targets = append(s.targets, c.Offset)
	}
	slices.SortFunc(items, func(a, b *stored) int {
		if a.doff != b.doff {
			return int(min(max(a.doff-b.doff, -1), 1))
		}
		return int(min(max(a.dlen-b.dlen, -1), 1))
	})
	var reqs []request
	for _, s := range items {
		if n := len(reqs); n > 0 {
			r := &reqs[n-1]
			gap := s.doff - r.end()
			if gap >= 0 && gap <= in.o.MaxGap && s.doff+s.dlen-r.start() <= in.o.MaxRequest {
				r.items = append(r.items, s)
				continue
			}
		}
		reqs = append(reqs, request{items: []*stored{s}})
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
			dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunkSize+1),
				zstd.WithDecoderMaxWindow(MaxChunkSize+1))
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
			defer dec.Close()
			var raw, out []byte
			for r := range ch {
				if err := in.fetchOne(ctx, r, dataOff, dec, &raw, &out); err != nil {
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

// fetchOne streams one coalesced request; after a cut it re-requests from the first stored range
// not yet written, up to Retry.Attempts times without progress.
func (in *installer) fetchOne(ctx context.Context, r request, dataOff int64, dec *zstd.Decoder, raw, out *[]byte) error {
	rt := retrier{in.o.Retry}
	pos, failures := 0, 0
	for pos < len(r.items) {
		from := r.items[pos].doff
		body, err := in.src.OpenRange(ctx, dataOff+from, r.end()-from)
		if err != nil {
			return err
		}
		in.requests.Add(1)
		cur := from
		var cut error
		for pos < len(r.items) {
			s := r.items[pos]
			if gap := s.doff - cur; gap > 0 {
				n, err := io.CopyN(io.Discard, body, gap)
				in.fetched.Add(n)
				if err != nil {
					cut = err
					break
				}
			}
			if int64(cap(*raw)) < s.dlen {
				*raw = make([]byte, s.dlen)
			}
			b := (*raw)[:s.dlen]
			n, err := io.ReadFull(body, b)
			in.fetched.Add(int64(n))
			if err != nil {
				cut = err
				break
			}
			if err := in.place(s, b, dec, out); err != nil {
				body.Close()
				return err
			}
			cur = s.doff + s.dlen
			pos++
			failures = 0
		}
		body.Close()
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
	return nil
}

// place decodes a stored range, checks its hash and writes it to every target offset.
func (in *installer) place(s *stored, b []byte, dec *zstd.Decoder, out *[]byte) error {
	data := b
	if s.enc == EncodingZstd {
		if cap(*out) < int(s.length) {
			*out = make([]byte, 0, s.length)
		}
		d, err := dec.DecodeAll(b, (*out)[:0])
		if err != nil || len(d) != int(s.length) {
			return rejectErr(ReasonChunkHash, err, "chunk at data offset %d does not decode to its %d bytes", s.doff, s.length)
		}
		data = d
	}
	if sha256.Sum256(data) != s.sum {
		return reject(ReasonChunkHash, "chunk at data offset %d does not match its signed hash; the payload or the server is corrupt", s.doff)
	}
	for _, off := range s.targets {
		if err := in.write(data, off); err != nil {
			return err
		}
		in.addDone(int64(len(data)))
	}
	return nil
}

// rehash re-reads [0, imageSize) of the target and compares it with the signed image hash.
func (in *installer) rehash(ctx context.Context) error {
	if s, ok := in.dst.Slot.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return fmt.Errorf("sync target slot: %w", err)
		}
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < in.m.ImageSize; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), in.m.ImageSize-off)
		if err := readFull(in.dst.Slot, buf[:n], off); err != nil {
			return fmt.Errorf("re-read target slot at %d: %w", off, err)
		}
		h.Write(buf[:n])
		off += n
	}
	var got Digest
	copy(got[:], h.Sum(nil))
	if got != in.m.ImageSHA256 {
		return reject(ReasonImageHash, "slot holds %s after install, manifest says %s; the slot device may be failing", got, in.m.ImageSHA256)
	}
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
	in.phase = p
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
