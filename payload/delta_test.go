package payload_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// deltaFixture is a payload of a new image with a delta section from the old one, and the same
// image as a payload without one.
type deltaFixture struct {
	*installFixture
	plain []byte // the new image's payload without delta sections
}

// newDeltaFixture changes both ways a rebuild does: whole runs rewritten and the second half
// shifted (newInstallFixture), and a few bytes edited in place here and there.
func newDeltaFixture(t *testing.T) *deltaFixture {
	t.Helper()
	f := newInstallFixture(t, 4<<20, 0.03)
	for off := 100_003; off < len(f.new); off += 257_111 {
		f.new[off] ^= 0x5a
		f.new[off+7] ^= 0xa5
	}
	plain := filepath.Join(t.TempDir(), "plain.tsp")
	payloadtest.BuildBytes(t, f.new, plain, payloadtest.Options("2.0.0"), f.key)
	o := payloadtest.Options("2.0.0")
	o.DeltaLevel = zstd.SpeedDefault // the best level is slow under the race detector
	o.DeltaFrom = []payload.DeltaBase{
		{Image: bytes.NewReader(payloadtest.Image(1<<20, 99)), Size: 1 << 20, Version: "0.9.0"},
		{Image: bytes.NewReader(f.old), Size: int64(len(f.old)), Version: "1.0.0"},
	}
	f.m = payloadtest.BuildBytes(t, f.new, f.path, o, f.key)
	var err error
	if f.file, err = os.ReadFile(f.path); err != nil {
		t.Fatal(err)
	}
	d := &deltaFixture{installFixture: f}
	if d.plain, err = os.ReadFile(plain); err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *deltaFixture) target(slot *memSlot, version string) payload.Target {
	return payload.Target{Slot: slot, Size: int64(len(slot.b)), Active: bytes.NewReader(f.old), ActiveSize: int64(len(f.old)), ActiveVersion: version}
}

func (f *deltaFixture) install(t *testing.T, file []byte, slot *memSlot, version string, o payload.InstallOptions) *payload.Result {
	t.Helper()
	res, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(file), int64(len(file))), f.target(slot, version), o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b[:len(f.new)], f.new) {
		t.Fatal("slot differs from the image")
	}
	return res
}

// TestDelta builds one payload with delta sections (slow under the race detector) for all its
// subtests.
func TestDelta(t *testing.T) {
	f := newDeltaFixture(t)
	t.Run("install", func(t *testing.T) { testDeltaInstall(t, f) })
	t.Run("fallback", func(t *testing.T) { testDeltaFallback(t, f) })
	t.Run("corrupt", func(t *testing.T) { testDeltaCorrupt(t, f) })
	t.Run("zero op signed with another hash", func(t *testing.T) { testDeltaZeroOpHash(t, f) })
	t.Run("slot that loses writes", func(t *testing.T) {
		// As on the chunk path (TestInstallReadBack): an image-hash rejection, which the agent
		// reports as a verification failure of the new slot, not as a download error.
		slot := &flakySlot{memSlot: newMemSlot(len(f.new)), flipAt: int64(len(f.new) / 3)}
		res, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(f.file), int64(len(f.file))),
			payload.Target{Slot: slot, Size: int64(len(f.new)), Active: bytes.NewReader(f.old), ActiveSize: int64(len(f.old)), ActiveVersion: "1.0.0"}, f.opts())
		if !errors.Is(err, payload.ErrImageHash) {
			t.Fatalf("got %v, %+v; want image-hash", err, res)
		}
	})
}

func testDeltaInstall(t *testing.T, f *deltaFixture) {
	if f.m.FormatVersion != payload.FormatVersionDelta || len(f.m.Deltas) != 2 || f.m.Deltas[1].BaseVersion != "1.0.0" {
		t.Fatalf("manifest %d deltas %+v", f.m.FormatVersion, f.m.Deltas)
	}
	byChunks := f.install(t, f.plain, newMemSlot(len(f.new)), "1.0.0", f.opts())
	if byChunks.DeltaBase != "" {
		t.Fatalf("a payload without sections installed by delta %q", byChunks.DeltaBase)
	}

	t.Run("fetches only the section of the running version", func(t *testing.T) {
		res := f.install(t, f.file, newMemSlot(len(f.new)), "1.0.0", f.opts())
		d := f.m.Deltas[1]
		if res.DeltaBase != "1.0.0" || res.DeltaFallback != "" {
			t.Fatalf("delta base %q, fallback %q", res.DeltaBase, res.DeltaFallback)
		}
		// Without the chunk table, and the ops' bytes only: less than the chunk path fetched.
		if res.BytesFetched+int64(d.OpCount)*payload.DeltaOpSize > d.Length || res.BytesFetched >= byChunks.BytesFetched ||
			res.BytesMetadata >= byChunks.BytesMetadata {
			t.Fatalf("delta fetched %d + %d metadata (section %d bytes); chunks fetched %d + %d", res.BytesFetched, res.BytesMetadata,
				d.Length, byChunks.BytesFetched, byChunks.BytesMetadata)
		}
		if res.BytesReusedActive < int64(len(f.new))/2 {
			t.Fatalf("copied only %d bytes from the active slot", res.BytesReusedActive)
		}
		t.Logf("delta: fetched %d + %d, %d requests; chunks: fetched %d + %d, %d requests", res.BytesFetched, res.BytesMetadata, res.Requests,
			byChunks.BytesFetched, byChunks.BytesMetadata, byChunks.Requests)
	})
	t.Run("with the whole-image hash", func(t *testing.T) {
		o := f.opts()
		o.RehashImage = true
		if res := f.install(t, f.file, newMemSlot(len(f.new)), "1.0.0", o); res.DeltaBase != "1.0.0" {
			t.Fatalf("delta base %q", res.DeltaBase)
		}
	})
	t.Run("another version takes the chunk path", func(t *testing.T) {
		res := f.install(t, f.file, newMemSlot(len(f.new)), "1.0.1", f.opts())
		if res.DeltaBase != "" || res.DeltaFallback != "" || res.BytesReusedActive == 0 {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("NoDelta takes the chunk path", func(t *testing.T) {
		o := f.opts()
		o.NoDelta = true
		if res := f.install(t, f.file, newMemSlot(len(f.new)), "1.0.0", o); res.DeltaBase != "" {
			t.Fatalf("delta base %q", res.DeltaBase)
		}
	})
	t.Run("resumed install redoes only what is missing", func(t *testing.T) {
		slot := newMemSlot(len(f.new))
		f.install(t, f.file, slot, "1.0.0", f.opts())
		// An interrupted attempt: a region lost, another holding older bytes.
		clear(slot.b[1<<20 : 1<<20+300_000])
		copy(slot.b[3<<20:], f.old[3<<20:3<<20+200_000])
		slot.writes = 0
		res := f.install(t, f.file, slot, "1.0.0", f.opts())
		if res.BytesWritten > 1_000_000 || res.BytesReusedTarget == 0 {
			t.Fatalf("resumed install wrote %d bytes, kept %d in the target", res.BytesWritten, res.BytesReusedTarget)
		}
		again := f.install(t, f.file, slot, "1.0.0", f.opts())
		if again.BytesWritten != 0 || again.BytesFetched != 0 {
			t.Fatalf("repeated install wrote %d, fetched %d", again.BytesWritten, again.BytesFetched)
		}
	})
}

// An active slot that is not the section's base (same version, other bytes) falls back to the
// chunk path and still installs the image.
func testDeltaFallback(t *testing.T, f *deltaFixture) {
	for _, c := range []struct {
		name string
		at   int
	}{
		{"copied bytes differ", 10},
		{"patch dictionary differs", 100_003 - 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			other := *f.installFixture
			other.old = bytes.Clone(f.old)
			for i := range 64 {
				other.old[c.at+i] ^= 0xff
			}
			g := &deltaFixture{installFixture: &other, plain: f.plain}
			res := g.install(t, f.file, newMemSlot(len(f.new)), "1.0.0", f.opts())
			if res.DeltaBase != "" || res.DeltaFallback == "" {
				t.Fatalf("delta base %q, fallback %q", res.DeltaBase, res.DeltaFallback)
			}
		})
	}
}

// index returns where the index of delta section k lies in the payload file, and its length.
func (f *deltaFixture) index(t *testing.T, k int) (off, n int64) {
	t.Helper()
	pf, err := payload.Open(bytes.NewReader(f.file), int64(len(f.file)))
	if err != nil {
		t.Fatal(err)
	}
	d := f.m.Deltas[k]
	n = int64(d.OpCount) * payload.DeltaOpSize
	return int64(payload.HeaderSize+pf.EnvelopeArea()) + d.Offset + d.Length - n, n
}

// A section whose index or stored bytes were changed after signing is refused, and nothing
// unverified reaches the slot.
func testDeltaCorrupt(t *testing.T, f *deltaFixture) {
	index, _ := f.index(t, 1)
	bad := bytes.Clone(f.file)
	bad[index+40] ^= 1
	_, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(bad), int64(len(bad))), f.target(newMemSlot(len(f.new)), "1.0.0"), f.opts())
	if !errors.Is(err, payload.ErrChunkTableMismatch) {
		t.Fatalf("changed index: %v", err)
	}
}

// testDeltaZeroOpHash: a signed index whose zero op carries a hash other than that of zeros is
// refused before anything is written (zeros are settled by "all zero", not by their hash).
func testDeltaZeroOpHash(t *testing.T, f *deltaFixture) {
	index, n := f.index(t, 1)
	d := f.m.Deltas[1]
	bad := bytes.Clone(f.file)
	ops := bad[index : index+n]
	k := 0
	for k < d.OpCount && payload.DeltaKind(ops[k*payload.DeltaOpSize]) != payload.DeltaZero {
		k++
	}
	if k == d.OpCount {
		t.Fatal("the fixture's delta section has no zero op")
	}
	ops[k*payload.DeltaOpSize+32] ^= 1
	sum := sha256.Sum256(ops)
	bad = envelopeEdit(func(env map[string]any) {
		var m map[string]any
		body, _ := base64Decode(env["payload"].(string))
		json.Unmarshal(body, &m)
		m["deltas"].([]any)[1].(map[string]any)["indexSha256"] = hex.EncodeToString(sum[:])
		nb, _ := json.Marshal(m)
		env["payload"] = base64Encode(nb)
		env["signatures"] = []any{}
	})(bad)
	p := filepath.Join(t.TempDir(), "p.tsp")
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	payloadtest.Sign(t, p, f.key)
	bad, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	slot := newMemSlot(len(f.new))
	_, err = payload.Install(t.Context(), payload.FromFile(bytes.NewReader(bad), int64(len(bad))), f.target(slot, "1.0.0"), f.opts())
	if !errors.Is(err, payload.ErrChunkHash) || !strings.Contains(err.Error(), "delta zero op at ") {
		t.Fatalf("got %v, want a chunk-hash rejection of a delta zero op", err)
	}
	if slot.writes != 0 {
		t.Fatalf("%d writes before the index was refused", slot.writes)
	}
}
