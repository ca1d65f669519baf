package payload

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

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
	in.addWritten(int64(len(b)))
	return nil
}

// addWritten counts n more bytes written to the target.
func (in *installer) addWritten(n int64) {
	after := in.written.Add(n)
	in.bg.wrote(after-n, after)
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
