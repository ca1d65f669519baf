package payload_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/v1.tsp and testdata/trust.json with a fresh key")

// goldenImage is the image inside testdata/v1.tsp.
func goldenImage() []byte { return payloadtest.Image(48<<10, 42) }

// TestGoldenV1 proves that a format-version-1 payload written by an earlier build still opens and
// verifies: the file format and the manifest schema are a compatibility promise.
func TestGoldenV1(t *testing.T) {
	tsp, trust := filepath.Join("testdata", "v1.tsp"), filepath.Join("testdata", "trust.json")
	if *updateGolden {
		k := payloadtest.NewKey(t, payload.KeyECDSAP256)
		o := payloadtest.Options("0.0.1-golden")
		o.Chunking = payload.Chunking{Algorithm: payload.ChunkingRabin, Min: 1 << 10, Max: 16 << 10, AverageBits: 12, Polynomial: payload.DefaultPolynomial}
		o.EnvelopeArea = 4096
		payloadtest.BuildBytes(t, goldenImage(), tsp, o, k)
		payloadtest.WriteTrustRoot(t, "testdata", payloadtest.TrustRoot(t, 1, 0, k))
	}
	b, err := os.ReadFile(tsp)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := payload.LoadTrustRoot(trust)
	if err != nil {
		t.Fatal(err)
	}
	f, err := payload.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.Verify(tr, payload.Expect{AppID: payload.DefaultAppID, Board: "amd64-usr", Floor: 1})
	if err != nil {
		t.Fatal(err)
	}
	img := goldenImage()
	if m.Version != "0.0.1-golden" || m.ImageSize != int64(len(img)) || m.Chunking.Algorithm != payload.ChunkingRabin {
		t.Fatalf("manifest %+v", m)
	}
	// Install it into a slot and compare with the image generator's bytes.
	slot := newMemSlot(len(img))
	res, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(b), int64(len(b))),
		payload.Target{Slot: slot, Size: int64(len(img))}, payload.InstallOptions{Trust: tr})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b, img) || res.Manifest.Version != m.Version {
		t.Fatal("installed golden payload differs from its image")
	}
}

var updateGoldenDelta = flag.Bool("update-golden-delta", false, "rewrite testdata/v2-delta.tsp and testdata/v2-delta/trust.json with a fresh key")

// goldenDeltaImages are the base and the image of testdata/v2-delta.tsp.
func goldenDeltaImages() (base, img []byte) {
	base = payloadtest.Image(64<<10, 43)
	return base, payloadtest.Mutate(base, 0.1, 44)
}

// TestGoldenV2Delta proves that a format-version-2 payload (with a delta section) written by an
// earlier build still installs by its section on a host running its base.
func TestGoldenV2Delta(t *testing.T) {
	tsp, dir := filepath.Join("testdata", "v2-delta.tsp"), filepath.Join("testdata", "v2-delta")
	base, img := goldenDeltaImages()
	if *updateGoldenDelta {
		k := payloadtest.NewKey(t, payload.KeyECDSAP256)
		o := payloadtest.Options("0.0.2-golden")
		o.Chunking = payload.Chunking{Algorithm: payload.ChunkingRabin, Min: 1 << 10, Max: 16 << 10, AverageBits: 12, Polynomial: payload.DefaultPolynomial}
		o.EnvelopeArea = 4096
		o.DeltaFrom = []payload.DeltaBase{{Image: bytes.NewReader(base), Size: int64(len(base)), Version: "0.0.1-golden"}}
		payloadtest.BuildBytes(t, img, tsp, o, k)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		payloadtest.WriteTrustRoot(t, dir, payloadtest.TrustRoot(t, 1, 0, k))
	}
	b, err := os.ReadFile(tsp)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := payload.LoadTrustRoot(filepath.Join(dir, "trust.json"))
	if err != nil {
		t.Fatal(err)
	}
	slot := newMemSlot(len(img))
	res, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(b), int64(len(b))),
		payload.Target{Slot: slot, Size: int64(len(img)), Active: bytes.NewReader(base), ActiveSize: int64(len(base)), ActiveVersion: "0.0.1-golden"},
		payload.InstallOptions{Trust: tr})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b, img) || res.Manifest.FormatVersion != payload.FormatVersionDelta || res.DeltaBase != "0.0.1-golden" {
		t.Fatalf("golden delta payload: version %d, delta %q, slot equal %v", res.Manifest.FormatVersion, res.DeltaBase, bytes.Equal(slot.b, img))
	}
}
