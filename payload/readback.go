package payload

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"
)

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
	// A span holds at least one chunk of any kind the table may hold (see tableParser).
	bufLen := max(rehashBufferSize, in.m.Chunking.maxZeroLen())
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
		return in.checkImageHash(h)
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

// checkImageHash compares h, the SHA-256 of the whole slot as read back, with the manifest's
// image hash.
func (in *installer) checkImageHash(h hash.Hash) error {
	if got := Digest(h.Sum(nil)); got != in.m.ImageSHA256 {
		return reject(ReasonImageHash, "slot holds %s after install, manifest says %s; the slot device may be failing", got, in.m.ImageSHA256)
	}
	return nil
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
