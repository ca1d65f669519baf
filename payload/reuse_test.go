package payload_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// countingReaderAt counts the bytes read from a real reader.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestInstallIndexesActiveBySample installs into a slot whose active slot is large enough to be
// sampled before it is indexed: an active slot with the same or a related image is indexed
// whole and every chunk it holds is found (the spans' cutters overlap, so none is lost where a
// span starts), an unrelated one is left after the samples.
func TestInstallIndexesActiveBySample(t *testing.T) {
	// Small chunks (1–16 KiB, about 4 KiB: the proportions of DefaultChunking) make an 8 MiB
	// slot large enough to be sampled (16 windows of 64 KiB).
	const size = 8 << 20
	opts := payloadtest.Options("2.0.0")
	opts.Chunking = payload.Chunking{Algorithm: payload.ChunkingRabin, Min: 1 << 10, Max: 16 << 10, AverageBits: 12, Polynomial: payload.DefaultPolynomial}
	k := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, k)
	old := payloadtest.Image(size, 21)
	install := func(t *testing.T, img, active []byte) (*payload.Result, int64) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "p.tsp")
		payloadtest.BuildBytes(t, img, path, opts, k)
		file := readFile(t, path)
		slot := newMemSlot(size + 1<<20)
		act := &countingReaderAt{r: bytes.NewReader(active)}
		res, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(file), int64(len(file))),
			payload.Target{Slot: slot, Size: int64(len(slot.b)), Active: act, ActiveSize: int64(len(active))},
			payload.InstallOptions{Trust: trust, Expect: payload.Expect{Board: "amd64-usr"}, Retry: noWait, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(slot.b[:len(img)], img) {
			t.Fatal("slot differs from the image")
		}
		return res, act.n.Load()
	}
	t.Run("same image: every chunk found, nothing fetched", func(t *testing.T) {
		res, read := install(t, old, old)
		if res.BytesFetched != 0 || res.BytesReusedActive+res.BytesZero != size {
			t.Fatalf("fetched %d, reused %d, zero %d of %d", res.BytesFetched, res.BytesReusedActive, res.BytesZero, size)
		}
		if read < size/2 {
			t.Fatalf("read only %d bytes of the %d-byte active slot", read, size)
		}
	})
	t.Run("related image: indexed whole", func(t *testing.T) {
		img := payloadtest.Mutate(old, 0.05, 22)
		res, read := install(t, img, old)
		if read < size {
			t.Fatalf("read only %d bytes of the %d-byte active slot", read, size)
		}
		if res.BytesReusedActive+res.BytesZero < size*8/10 {
			t.Fatalf("reused %d of %d bytes", res.BytesReusedActive, size)
		}
	})
	t.Run("unrelated image: only the samples are cut", func(t *testing.T) {
		img := payloadtest.Image(size, 23)
		res, read := install(t, img, old)
		// 4 windows of 64 KiB of random data hold the 256 KiB that decide: cut 2 at a time
		// (the workers), the sampling stops after the second pair.
		if limit := int64(4 * 64 << 10); read > limit {
			t.Fatalf("read %d bytes of the %d-byte active slot that holds an unrelated image; want ≤ %d", read, size, limit)
		}
		if res.BytesReusedActive != 0 {
			t.Fatalf("reused %d bytes from an unrelated image", res.BytesReusedActive)
		}
	})
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// failingReaderAt fails every read with err.
type failingReaderAt struct{ err error }

func (f failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

// unreadableTarget is a slot whose reads fail with err (its writes succeed).
type unreadableTarget struct {
	*memSlot
	err error
}

func (u unreadableTarget) ReadAt([]byte, int64) (int, error) { return 0, u.err }

// The sampling of the active slot runs beside the scan of the target: a read error of either
// fails the install with that error, and nothing is written.
func TestInstallSlotReadErrors(t *testing.T) {
	const size = 8 << 20
	opts := payloadtest.Options("2.0.0")
	opts.Chunking = payload.Chunking{Algorithm: payload.ChunkingRabin, Min: 1 << 10, Max: 16 << 10, AverageBits: 12, Polynomial: payload.DefaultPolynomial}
	k := payloadtest.NewKey(t, "")
	path := filepath.Join(t.TempDir(), "p.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(size, 31), path, opts, k)
	file := readFile(t, path)
	install := func(slot payload.Slot, active io.ReaderAt) error {
		_, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(file), int64(len(file))),
			payload.Target{Slot: slot, Size: size + 1<<20, Active: active, ActiveSize: size},
			payload.InstallOptions{Trust: payloadtest.TrustRoot(t, 1, 0, k), Expect: payload.Expect{Board: "amd64-usr"}, Retry: noWait})
		return err
	}
	t.Run("active slot", func(t *testing.T) {
		bad := errors.New("active slot: input/output error")
		slot := newMemSlot(size + 1<<20)
		err := install(slot, failingReaderAt{bad})
		if !errors.Is(err, bad) || !strings.Contains(err.Error(), "read active slot") {
			t.Fatalf("err = %v, want the active slot's read error", err)
		}
		if slot.writes != 0 {
			t.Fatalf("%d writes to the target after the active slot failed", slot.writes)
		}
	})
	t.Run("target slot", func(t *testing.T) {
		bad := errors.New("target slot: input/output error")
		slot := unreadableTarget{newMemSlot(size + 1<<20), bad}
		err := install(slot, bytes.NewReader(payloadtest.Image(size, 32)))
		if !errors.Is(err, bad) || !strings.Contains(err.Error(), "read target slot") {
			t.Fatalf("err = %v, want the target slot's read error", err)
		}
		if slot.writes != 0 {
			t.Fatalf("%d writes to the target after its scan failed", slot.writes)
		}
	})
}
