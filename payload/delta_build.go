package payload

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// DeltaBase is an older image Build makes a delta section for (BuildOptions.DeltaFrom).
type DeltaBase struct {
	Image   io.ReaderAt
	Size    int64
	Version string // the base's version as hosts running it report it (os-release VERSION_ID)
}

// deltaPad is how far a patch op's dictionary reaches before and after the base extent that
// matches its target extent: an edit that moved bytes a little still finds them.
const deltaPad = 64 << 10

// deltaWindow is how many ops Build encodes at once (in parallel) before it writes them: it
// bounds the builder's memory to about deltaWindow stored ops.
const deltaWindow = 32

// plannedOp is an op before its bytes are hashed and encoded: kind 0 means "changed" (to be
// stored as patch, zstd or raw), src then is where the matching base bytes probably are.
type plannedOp struct {
	kind DeltaKind
	off  int64
	n    uint32
	src  int64
}

// writeDelta writes the delta section that rebuilds the target image (cut as chunks)
// from base to w, and returns its manifest entry with Offset 0.
func writeDelta(ctx context.Context, target io.ReaderAt, chunks []Chunk, base DeltaBase, o BuildOptions, w io.Writer) (DeltaRef, error) {
	ref := DeltaRef{BaseVersion: base.Version, BaseSize: base.Size}
	if base.Size <= 0 || base.Size > MaxImageSize {
		return ref, fmt.Errorf("delta base %s: size %d outside 1..%d", base.Version, base.Size, int64(MaxImageSize))
	}
	if err := checkField("delta base version", base.Version); err != nil {
		return ref, err
	}
	index, sum, err := indexBase(ctx, base, o.Chunking)
	if err != nil {
		return ref, fmt.Errorf("delta base %s: %w", base.Version, err)
	}
	ref.BaseSHA256 = sum
	plan, err := planDelta(ctx, target, chunks, base, index)
	if err != nil {
		return ref, fmt.Errorf("delta base %s: %w", base.Version, err)
	}
	if len(plan) > MaxDeltaOps {
		return ref, fmt.Errorf("delta base %s: %d ops exceed the limit %d", base.Version, len(plan), MaxDeltaOps)
	}
	encs, err := newDeltaEncoders(o.Workers, o.Level)
	if err != nil {
		return ref, err
	}
	defer func() {
		for _, e := range encs {
			e.close()
		}
	}()
	ops := make([]DeltaOp, len(plan))
	var stored int64
	for lo := 0; lo < len(plan); lo += deltaWindow {
		hi := min(lo+deltaWindow, len(plan))
		data := make([][]byte, hi-lo)
		err := parallelFor(ctx, len(encs), hi-lo, func(w, k int) error {
			op, b, err := encs[w].encode(target, base, plan[lo+k])
			ops[lo+k], data[k] = op, b
			return err
		})
		if err != nil {
			return ref, fmt.Errorf("delta base %s: %w", base.Version, err)
		}
		for _, b := range data {
			if _, err := w.Write(b); err != nil {
				return ref, err
			}
			stored += int64(len(b))
		}
	}
	idx := marshalDeltaIndex(ops)
	if _, err := w.Write(idx); err != nil {
		return ref, err
	}
	ref.OpCount = len(ops)
	ref.IndexSHA256 = sha256.Sum256(idx)
	ref.Length = stored + int64(len(idx))
	return ref, nil
}

// indexBase cuts the base with the target's chunking and returns where each non-zero chunk
// starts (by SHA-256), and the base's SHA-256.
func indexBase(ctx context.Context, base DeltaBase, c Chunking) (map[[32]byte]int64, Digest, error) {
	full := sha256.New()
	cut, err := c.newCutter(io.TeeReader(bufio.NewReaderSize(io.NewSectionReader(base.Image, 0, base.Size), 1<<20), full))
	if err != nil {
		return nil, Digest{}, err
	}
	index := map[[32]byte]int64{}
	buf := make([]byte, c.maxLen())
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, Digest{}, err
		}
		data, err := cut.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, Digest{}, fmt.Errorf("read base image: %w", err)
		}
		if !allZero(data) {
			sum := sha256.Sum256(data)
			if _, ok := index[sum]; !ok {
				index[sum] = off
			}
		}
		off += int64(len(data))
	}
	if off != base.Size {
		return nil, Digest{}, fmt.Errorf("read %d bytes of the %d-byte base image", off, base.Size)
	}
	return index, Digest(full.Sum(nil)), nil
}

// planDelta decides each target extent's op: zero, copy from the same place of the base, copy
// from where the base holds a chunk with the same hash, or changed. Neighbouring copies and
// zeros are coalesced up to MaxDeltaOpSize.
func planDelta(ctx context.Context, target io.ReaderAt, chunks []Chunk, base DeltaBase, index map[[32]byte]int64) ([]plannedOp, error) {
	var plan []plannedOp
	var shift int64 // source minus target offset of the last copy: where moved bytes probably came from
	tb := make([]byte, MaxDeltaOpSize)
	bb := make([]byte, MaxDeltaOpSize)
	add := func(p plannedOp) {
		if k := len(plan) - 1; k >= 0 && p.kind != 0 && plan[k].kind == p.kind && plan[k].off+int64(plan[k].n) == p.off &&
			int64(plan[k].n)+int64(p.n) <= MaxDeltaOpSize && (p.kind == DeltaZero || plan[k].src+int64(plan[k].n) == p.src) {
			plan[k].n += p.n
			return
		}
		plan = append(plan, p)
	}
	for _, c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for done := int64(0); done < int64(c.Length); {
			n := min(int64(c.Length)-done, MaxDeltaOpSize)
			off := c.Offset + done
			whole := done == 0 && n == int64(c.Length)
			done += n
			if c.Encoding == EncodingZero {
				add(plannedOp{kind: DeltaZero, off: off, n: uint32(n)})
				continue
			}
			t := tb[:n]
			if err := readFull(target, t, off); err != nil {
				return nil, fmt.Errorf("read target image at %d: %w", off, err)
			}
			if off+n <= base.Size {
				b := bb[:n]
				if err := readFull(base.Image, b, off); err != nil {
					return nil, fmt.Errorf("read base image at %d: %w", off, err)
				}
				if bytes.Equal(t, b) {
					shift = 0
					add(plannedOp{kind: DeltaCopy, off: off, n: uint32(n), src: off})
					continue
				}
			}
			if src, ok := index[c.SHA256]; ok && whole {
				shift = src - off
				add(plannedOp{kind: DeltaCopy, off: off, n: uint32(n), src: src})
				continue
			}
			add(plannedOp{off: off, n: uint32(n), src: off + shift})
		}
	}
	return plan, nil
}

// deltaEncoder is one build worker's state.
type deltaEncoder struct {
	plain *zstd.Encoder // zstd alone
	patch *zstd.Encoder // zstd against a raw dictionary (set for each op)
	tbuf  []byte
	dict  []byte
}

// encode hashes the target extent of p and, for a changed one, stores it the smallest way:
// patched against the base at its likely source and at the same place, zstd alone, or raw.
func (e *deltaEncoder) encode(target io.ReaderAt, base DeltaBase, p plannedOp) (DeltaOp, []byte, error) {
	op := DeltaOp{Kind: p.kind, Offset: p.off, Length: p.n}
	t := e.tbuf[:p.n]
	if p.kind == DeltaZero {
		op.SHA256 = zeroSHA(p.n)
		return op, nil, nil
	}
	if err := readFull(target, t, p.off); err != nil {
		return op, nil, fmt.Errorf("read target image at %d: %w", p.off, err)
	}
	op.SHA256 = sha256.Sum256(t)
	if p.kind == DeltaCopy {
		op.SourceOffset, op.SourceLength = p.src, p.n
		return op, nil, nil
	}
	best := e.plain.EncodeAll(t, nil)
	op.Kind = DeltaZstd
	if len(best) >= len(t) {
		best, op.Kind = append([]byte(nil), t...), DeltaRaw
	}
	at := []int64{p.src}
	if p.off != p.src {
		at = append(at, p.off)
	}
	for _, a := range at {
		lo := max(0, min(a-deltaPad, base.Size))
		hi := min(base.Size, max(a+int64(p.n)+deltaPad, 0))
		if hi-lo < 64 {
			continue
		}
		d := e.dict[:hi-lo]
		if err := readFull(base.Image, d, lo); err != nil {
			return op, nil, fmt.Errorf("read base image at %d: %w", lo, err)
		}
		// A new dictionary each time (a new *dict: the encoder rebuilds its tables), one
		// encoder per worker (a best-level encoder allocates tens of MB).
		if err := e.patch.ResetWithOptions(nil, zstd.WithEncoderDictRaw(0, d)); err != nil {
			return op, nil, err
		}
		z := e.patch.EncodeAll(t, nil)
		if len(z) < len(best) {
			best, op.Kind, op.SourceOffset, op.SourceLength = z, DeltaPatch, lo, uint32(hi-lo)
		}
	}
	op.DataLength = uint32(len(best))
	return op, best, nil
}

// newDeltaEncoders makes one encoder pair per worker: a best-level encoder allocates tens of
// MB, so they live as long as the section's build.
func newDeltaEncoders(workers int, level zstd.EncoderLevel) ([]*deltaEncoder, error) {
	var encs []*deltaEncoder
	opts := []zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false)}
	for range max(workers, 1) {
		plain, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			return nil, err
		}
		patch, err := zstd.NewWriter(nil, append(opts, zstd.WithEncoderDictRaw(0, make([]byte, 64)))...)
		if err != nil {
			plain.Close()
			return nil, err
		}
		encs = append(encs, &deltaEncoder{plain: plain, patch: patch, tbuf: make([]byte, MaxDeltaOpSize), dict: make([]byte, MaxDeltaOpSize+2*deltaPad)})
	}
	return encs, nil
}

func (e *deltaEncoder) close() {
	e.plain.Close()
	e.patch.Close()
}
