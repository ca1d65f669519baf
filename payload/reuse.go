package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
)

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
