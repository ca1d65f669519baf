package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// errDeltaSource says that the active slot does not hold the bytes a delta section was built
// from (an op's result did not match its signed hash): the install goes on by the chunk path.
var errDeltaSource = errors.New("the active slot differs from the delta section's base")

// maxDeltaRequest bounds one Range request of a delta install (each request in flight holds a
// buffer of that size).
const maxDeltaRequest = 4 << 20

// pickDelta returns the delta section the install uses: the one built from the version the
// active slot runs, when the caller named it and the slot is large enough.
func (in *installer) pickDelta(m *Manifest) (DeltaRef, bool) {
	if in.o.NoDelta || in.dst.Active == nil || in.dst.ActiveVersion == "" {
		return DeltaRef{}, false
	}
	for _, d := range m.Deltas {
		if d.BaseVersion == in.dst.ActiveVersion && d.BaseSize <= in.dst.ActiveSize {
			return d, true
		}
	}
	return DeltaRef{}, false
}

// deltaWorker is one worker's buffers.
type deltaWorker struct {
	src, dst, out []byte
	plain, dict   *zstd.Decoder
}

func newDeltaWorker() (*deltaWorker, error) {
	opts := []zstd.DOption{zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDeltaOpSize + 1),
		zstd.WithDecoderMaxWindow(MaxDeltaOpSize + MaxDeltaDict)}
	plain, err := zstd.NewReader(nil, opts...)
	if err != nil {
		return nil, err
	}
	dict, err := zstd.NewReader(nil, opts...)
	if err != nil {
		plain.Close()
		return nil, err
	}
	return &deltaWorker{src: make([]byte, MaxDeltaDict), dst: make([]byte, MaxDeltaOpSize), out: make([]byte, 0, MaxDeltaOpSize),
		plain: plain, dict: dict}, nil
}

func (w *deltaWorker) close() {
	w.plain.Close()
	w.dict.Close()
}

// runDelta installs the image by delta section d: it reads and checks the section's index,
// then copies, zeroes, and fetches and patches every op whose target extent does not hold its
// bytes yet, reading each written extent back. It returns errDeltaSource (wrapped) when the
// active slot turns out not to be the base; what was written stays for the chunk path to keep.
func (in *installer) runDelta(ctx context.Context, f *File, d DeltaRef) (meta int64, err error) {
	dataOff := f.hdr.dataOffset()
	idx := make([]byte, d.indexLen())
	in.requests.Add(1)
	if err := in.src.ReadAt(ctx, idx, dataOff+d.indexOffset()); err != nil {
		return 0, fmt.Errorf("read delta index: %w", err)
	}
	if Digest(sha256.Sum256(idx)) != d.IndexSHA256 {
		return 0, reject(ReasonChunkTableMismatch, "the index of the delta section from %s does not match the signed hash %s", d.BaseVersion, d.IndexSHA256)
	}
	ops, err := parseDeltaIndex(idx, d, in.m.ImageSize)
	if err != nil {
		return 0, err
	}
	if err := checkZeroOps(ops); err != nil {
		return 0, err
	}
	idx = nil
	meta = int64(HeaderSize) + int64(f.hdr.EnvelopeArea) + d.indexLen()
	in.log.Info("installing by delta section", "base", d.BaseVersion, "ops", len(ops), "section_bytes", d.Length)

	workers := make([]*deltaWorker, in.o.Workers)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.close()
			}
		}
	}()
	worker := func(k int) (*deltaWorker, error) {
		if workers[k] == nil {
			w, err := newDeltaWorker()
			if err != nil {
				return nil, err
			}
			workers[k] = w
		}
		return workers[k], nil
	}
	// Local ops first (copy, zero) and a look at the target for the others: an interrupted
	// attempt's bytes are kept, and only the missing ops are fetched.
	in.setPhase("delta-local")
	need := make([]bool, len(ops))
	err = in.parallel(ctx, len(ops), func(k, i int) error {
		w, err := worker(k)
		if err != nil {
			return err
		}
		need[i], err = in.deltaLocal(w, &ops[i])
		return err
	})
	if err != nil {
		return meta, err
	}
	in.setPhase("fetch")
	if err := in.deltaFetch(ctx, d, dataOff, ops, need, worker); err != nil {
		return meta, err
	}
	return meta, nil
}

// checkZeroOps refuses an index whose zero ops carry a hash other than that of zeros, so that
// "all zero" can stand for "hash matches" when they are settled.
func checkZeroOps(ops []DeltaOp) error {
	return checkZeroSums("delta zero op", ops, func(op *DeltaOp) (bool, int64, uint32, [32]byte) {
		return op.Kind == DeltaZero, op.Offset, op.Length, op.SHA256
	})
}

// deltaLocal settles a copy or zero op and reports whether a stored op still needs its bytes.
func (in *installer) deltaLocal(w *deltaWorker, op *DeltaOp) (bool, error) {
	t := w.dst[:op.Length]
	if err := readFull(in.dst.Slot, t, op.Offset); err != nil {
		return false, fmt.Errorf("read target slot at %d: %w", op.Offset, err)
	}
	switch op.Kind {
	case DeltaZero:
		in.zero.Add(int64(op.Length))
		if !allZero(t) {
			clear(t)
			if err := in.put(w, t, op.Offset); err != nil {
				return false, err
			}
		}
		in.addDone(int64(op.Length))
		return false, nil
	case DeltaCopy:
		s := w.src[:op.Length]
		if err := readFull(in.dst.Active, s, op.SourceOffset); err != nil {
			return false, fmt.Errorf("read active slot at %d: %w", op.SourceOffset, err)
		}
		if sha256.Sum256(s) != op.SHA256 {
			return false, fmt.Errorf("delta copy of %d bytes from %d: %w", op.Length, op.SourceOffset, errDeltaSource)
		}
		in.reusedA.Add(int64(op.Length))
		if !bytes.Equal(s, t) {
			if err := in.put(w, s, op.Offset); err != nil {
				return false, err
			}
		}
		in.addDone(int64(op.Length))
		return false, nil
	}
	if sha256.Sum256(t) == op.SHA256 {
		in.reusedT.Add(int64(op.Length))
		in.addDone(int64(op.Length))
		return false, nil
	}
	return true, nil
}

// put writes b (checked) at off of the target and reads it back.
func (in *installer) put(w *deltaWorker, b []byte, off int64) error {
	if err := in.write(b, off); err != nil {
		return err
	}
	back := w.out[:len(b)]
	if err := readFull(in.dst.Slot, back, off); err != nil {
		return fmt.Errorf("read back target slot at %d: %w", off, err)
	}
	if !bytes.Equal(back, b) {
		return reject(ReasonImageHash, "the slot reads back other bytes at %d than were written there; the slot device may be failing", off)
	}
	return nil
}

// deltaFetch fetches the stored bytes of the needed ops in coalesced requests, several in
// flight, and decodes, checks and writes each op.
func (in *installer) deltaFetch(ctx context.Context, d DeltaRef, dataOff int64, ops []DeltaOp, need []bool, worker func(int) (*deltaWorker, error)) error {
	type req struct{ lo, hi int } // ops[lo:hi], of which the needed ones are fetched
	var reqs []req
	start := func(i int) int64 { return ops[i].DataOffset }
	end := func(i int) int64 { return ops[i].DataOffset + int64(ops[i].DataLength) }
	for i := range ops {
		if !need[i] {
			continue
		}
		if k := len(reqs) - 1; k >= 0 {
			r := &reqs[k]
			if gap := start(i) - end(r.hi-1); gap <= in.o.MaxGap && end(i)-start(r.lo) <= min(in.o.MaxRequest, maxDeltaRequest) {
				r.hi = i + 1
				continue
			}
		}
		reqs = append(reqs, req{i, i + 1})
	}
	bufs := make([][]byte, in.o.Workers)
	return in.parallel(ctx, len(reqs), func(k, j int) error {
		r := reqs[j]
		w, err := worker(k)
		if err != nil {
			return err
		}
		n := end(r.hi-1) - start(r.lo)
		if int64(cap(bufs[k])) < n {
			bufs[k] = make([]byte, n)
		}
		b := bufs[k][:n]
		in.requests.Add(1)
		if err := in.src.ReadAt(ctx, b, dataOff+d.Offset+start(r.lo)); err != nil {
			return fmt.Errorf("fetch delta section: %w", err)
		}
		in.fetched.Add(n)
		in.report(false)
		for i := r.lo; i < r.hi; i++ {
			if !need[i] {
				continue
			}
			op := &ops[i]
			stored := b[op.DataOffset-start(r.lo):][:op.DataLength]
			out, err := in.deltaDecode(w, op, stored)
			if err != nil {
				return err
			}
			if err := in.put(w, out, op.Offset); err != nil {
				return err
			}
			in.addDone(int64(op.Length))
		}
		return nil
	})
}

// deltaDecode returns the target bytes of a stored op, checked against its hash.
func (in *installer) deltaDecode(w *deltaWorker, op *DeltaOp, stored []byte) ([]byte, error) {
	var out []byte
	var err error
	switch op.Kind {
	case DeltaRaw:
		out = stored
	case DeltaZstd:
		out, err = w.plain.DecodeAll(stored, w.dst[:0])
	case DeltaPatch:
		src := w.src[:op.SourceLength]
		if err := readFull(in.dst.Active, src, op.SourceOffset); err != nil {
			return nil, fmt.Errorf("read active slot at %d: %w", op.SourceOffset, err)
		}
		if err := w.dict.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, src)); err != nil {
			return nil, err
		}
		out, err = w.dict.DecodeAll(stored, w.dst[:0])
	}
	if err != nil || len(out) != int(op.Length) || sha256.Sum256(out) != op.SHA256 {
		if op.Kind == DeltaPatch {
			return nil, fmt.Errorf("delta patch at %d: %w", op.Offset, errDeltaSource)
		}
		return nil, rejectErr(ReasonChunkHash, err, "delta op at %d (%s) does not decode to its signed bytes; the payload or the server is corrupt", op.Offset, op.Kind)
	}
	return out, nil
}

// rehashImage hashes the image's bytes in the target with SHA-256 and compares them with the
// manifest (InstallOptions.RehashImage after a delta install).
func (in *installer) rehashImage(ctx context.Context) error {
	h := sha256.New()
	buf := make([]byte, rehashBufferSize)
	for off := int64(0); off < in.m.ImageSize; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(int64(len(buf)), in.m.ImageSize-off)]
		if err := readFull(in.dst.Slot, b, off); err != nil {
			return fmt.Errorf("read back target slot at %d: %w", off, err)
		}
		h.Write(b)
		off += int64(len(b))
	}
	return in.checkImageHash(h)
}
