package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// scanTarget marks the chunks whose bytes are already at their place in the target. It reads
// only the first ProbeSize bytes of a region whose probe does not match, and nothing of zero
// chunks (the read-back settles them). On a device whose cache is cold this is one small read
// per chunk (32768 for a 2 GiB image), bound by the device's latency rather than the CPU, so it
// keeps targetScanReaders reads in flight (on a virtual disk, about twice as fast as two).
func (in *installer) scanTarget(ctx context.Context) error {
	probes := make([][ProbeSize]byte, max(in.o.Workers, targetScanReaders))
	chunkBufs := make([][]byte, len(probes)) // made on a reader's first probe that matches
	return parallelFor(ctx, len(probes), len(in.m.Chunks), func(w, i int) error {
		c := in.m.Chunks[i]
		if c.Encoding == EncodingZero {
			return nil
		}
		p := min(int(c.Length), ProbeSize)
		if err := readFull(in.dst.Slot, probes[w][:p], c.Offset); err != nil {
			return fmt.Errorf("read target slot at %d: %w", c.Offset, err)
		}
		if probe(probes[w][:p]) != c.Probe {
			in.need[i] = true
			return nil
		}
		if chunkBufs[w] == nil {
			chunkBufs[w] = make([]byte, in.m.Chunking.maxLen())
		}
		b := chunkBufs[w][:c.Length]
		copy(b, probes[w][:p])
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

// targetScanReaders is how many reads scanTarget keeps in flight (at least Workers).
const targetScanReaders = 16

// Sampling of the active slot before indexing it (see sampleActive), in the manifest's largest
// chunks (256 KiB by default): up to activeSamples evenly spread windows of activeSampleChunks
// (1 MiB), cut Workers at a time until they found a chunk of the payload or cut
// activeSampleMinChunks (4 MiB) of non-zero data without finding one, which is when "no chunk in
// common" stands for the whole slot (a mostly empty filesystem samples mostly zeros). Slots
// shorter than activeSamples·activeSampleMinSpan windows are indexed whole.
const (
	activeSamplesLog2     = 4 // activeSamples is a power of two for the bit-reversed order
	activeSamples         = 1 << activeSamplesLog2
	activeSampleChunks    = 4
	activeSampleMinChunks = 16
	activeSampleMinSpan   = 4
)

// span is a range [start, end) of the active slot.
type span struct{ start, end int64 }

// sampleActive tells whether the active slot holds an image unrelated to the payload, by cutting
// a few windows spread over it (at most activeSamples). An active slot that holds a related
// image (a delta's base) has chunks in common with the payload all over it; one that holds an
// unrelated image (a full install) has none, and cutting all of it would cost about as much CPU
// as decoding and hashing the whole payload. So when the windows cut enough non-zero data
// (activeSampleMinChunks) and found no chunk of the payload, the slot is unrelated. It only
// reads the active slot and copies nothing, so it runs beside scanTarget; the windows of a
// related slot are cut again by copyFromActive.
func (in *installer) sampleActive(ctx context.Context) (unrelated bool, err error) {
	maxLen := int64(in.m.Chunking.maxLen())
	window := activeSampleChunks * maxLen
	step := in.dst.ActiveSize / activeSamples
	if step < activeSampleMinSpan*window {
		return false, nil // too short to sample: indexed whole
	}
	// The windows in bit-reversed order (0, 8, 4, 12, 2, …): every prefix is spread over the
	// whole slot, and the sampling stops as soon as it can decide.
	samples := make([]span, activeSamples)
	for j := range samples {
		k := int64(bits.Reverse32(uint32(j)) >> (32 - activeSamplesLog2))
		s := k*step + (step-window)/2
		samples[j] = span{s, s + window}
	}
	w := in.newWanted(false)
	w.countOnly = true
	var found, data int64
	for len(samples) > 0 {
		batch := samples[:min(in.o.Workers, len(samples))]
		samples = samples[len(batch):]
		f, d, err := in.scanSpans(ctx, batch, 0, w)
		if err == nil {
			err = ctx.Err() // scanSpans takes a cancelled ctx for "all found"; here it is a stop
		}
		if err != nil {
			return false, err
		}
		if found, data = found+f, data+d; found > 0 {
			return false, nil
		}
		if data >= activeSampleMinChunks*maxLen {
			in.log.Info("active slot shares no chunk with the payload in the sampled windows; not indexing the rest",
				"windows", activeSamples-len(samples), "sampled_data_bytes", data)
			return true, nil
		}
	}
	return false, nil // too little data in the windows to tell (a mostly empty filesystem)
}

// copyFromActive cuts the whole active slot with the manifest's chunking, in Workers segments in
// parallel, and copies every chunk whose hash a missing chunk wants into the target (the hash
// was just computed over the bytes written). Each segment is read a little past its end
// (activeOverlap): content-defined boundaries re-synchronise a few chunks after where a cutter
// starts, so the chunks a segment's cutter misses at its start are found by the one before.
func (in *installer) copyFromActive(ctx context.Context) error {
	w := in.newWanted(true)
	if w.left == 0 {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	w.stop = cancel
	size := in.dst.ActiveSize
	// Few segments: few cutter starts, so few chunks depend on the overlap.
	var whole []span
	segLen := max(size/int64(in.o.Workers), 4*int64(in.m.Chunking.maxLen()))
	for start := int64(0); start < size; start += segLen {
		whole = append(whole, span{start, min(start+segLen, size)})
	}
	if _, _, err := in.scanSpans(ctx, whole, in.activeOverlap(), w); err != nil {
		return err
	}
	return parent.Err() // our own early stop (all found) is not an error
}

// scanSpans cuts the spans of the active slot (each read on overlap bytes past its end) on
// Workers goroutines, copying wanted chunks to the target (unless w.countOnly). It returns how
// many distinct wanted chunks it found and how many bytes of non-zero chunks it cut. Once
// everything wanted was found (ctx cancelled by w.stop) it stops, without error.
func (in *installer) scanSpans(ctx context.Context, spans []span, overlap int64, w *wanted) (found, data int64, err error) {
	var nf, nd atomic.Int64
	err = in.parallel(ctx, len(spans), func(_, i int) error {
		f, d, err := in.scanActive(ctx, spans[i], overlap, w)
		nf.Add(f)
		nd.Add(d)
		return err
	})
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	return nf.Load(), nd.Load(), err
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
	// countOnly: the scan counts the wanted chunks it finds and copies none (sampleActive).
	countOnly bool
}

// newWanted indexes the payload's non-zero chunks, only those not yet in place if onlyMissing.
func (in *installer) newWanted(onlyMissing bool) *wanted {
	chunks := in.m.Chunks
	w := &wanted{chunks: chunks}
	for i, c := range chunks {
		if (!onlyMissing || in.need[i]) && c.Encoding != EncodingZero {
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

// scanActive cuts sp of the active slot (reading on overlap bytes past its end) and copies
// wanted chunks to the target. It returns the distinct wanted chunks it found and the bytes of
// the non-zero chunks it cut. A cancelled ctx stops it without error.
func (in *installer) scanActive(ctx context.Context, sp span, overlap int64, w *wanted) (found, data int64, err error) {
	if c := in.m.Chunking; c.Algorithm == ChunkingFixed {
		sp.start -= sp.start % int64(c.Size) // fixed chunks only match at their own boundaries
	}
	end := min(sp.end+overlap, in.dst.ActiveSize)
	cut, err := in.m.Chunking.newCutter(io.NewSectionReader(in.dst.Active, sp.start, end-sp.start))
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, in.m.Chunking.maxLen())
	for ctx.Err() == nil {
		b, err := cut.Next(buf)
		if err == io.EOF {
			return found, data, nil
		}
		if err != nil {
			return found, data, fmt.Errorf("read active slot: %w", err)
		}
		if !allZero(b) {
			data += int64(len(b))
		}
		if !w.mayWant(probe(b)) {
			continue // cannot be a wanted chunk; skip the SHA-256
		}
		idx := w.take(sha256.Sum256(b))
		if len(idx) == 0 {
			continue
		}
		found++
		if w.countOnly {
			continue
		}
		crc := crc32.Checksum(b, castagnoli)
		for _, i := range idx {
			c := in.m.Chunks[i]
			if err := in.write(b, c.Offset); err != nil {
				return found, data, err
			}
			in.need[i] = false
			in.placed.mark(int(i), crc)
			in.reusedA.Add(int64(c.Length))
			in.addDone(int64(c.Length))
		}
	}
	return found, data, nil
}

// activeOverlap is how far past its end a span of the active slot is cut: a few of the largest
// chunks, enough for the cutter of the next span to be in step with the image's boundaries.
func (in *installer) activeOverlap() int64 { return 8 * int64(in.m.Chunking.maxLen()) }
