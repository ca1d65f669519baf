package payload_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
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
			payload.InstallOptions{Trust: trust, Expect: payload.Expect{Board: "amd64-usr"}, Retry: noWait})
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
		if read > 16*64<<10 {
			t.Fatalf("read %d bytes of the %d-byte active slot that holds an unrelated image", read, size)
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
