package payload_test

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// benchPayload is a built and signed payload on disk with its image.
type benchPayload struct {
	image string
	path  string
	m     *payload.Manifest
	key   *payloadtest.Key
	trust *payload.TrustRoot
}

func buildBench(b *testing.B, dir, image string, o payload.BuildOptions) *benchPayload {
	b.Helper()
	k := payloadtest.NewKey(b, "")
	p := filepath.Join(dir, filepath.Base(image)+".tsp")
	m := payloadtest.BuildFile(b, image, p, o, k)
	return &benchPayload{image: image, path: p, m: m, key: k, trust: payloadtest.TrustRoot(b, 1, 0, k)}
}

// rawLimit decodes and hashes every stored chunk of p once, on one goroutine: the bytes/second
// of "SHA-256 + zstd decode of the same bytes", the floor any installer has to pay.
func rawLimit(b *testing.B, p *benchPayload) float64 {
	b.Helper()
	f, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	dataOff := st.Size() - p.m.TableSize - p.m.DataSize
	data := make([]byte, p.m.DataSize)
	if _, err := f.ReadAt(data, dataOff); err != nil {
		b.Fatal(err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	out := make([]byte, 0, p.m.Chunking.Max+p.m.Chunking.Size)
	start := time.Now()
	for _, c := range p.m.Chunks {
		stored := data[c.DataOffset : c.DataOffset+int64(c.DataLength)]
		var plain []byte
		switch c.Encoding {
		case payload.EncodingZstd:
			plain, err = dec.DecodeAll(stored, out[:0])
			if err != nil {
				b.Fatal(err)
			}
		case payload.EncodingRaw:
			plain = stored
		default:
			continue // zero chunks are neither decoded nor hashed from data
		}
		if sha256.Sum256(plain) != c.SHA256 {
			b.Fatal("raw limit: hash mismatch")
		}
	}
	return float64(p.m.ImageSize) / time.Since(start).Seconds()
}

// fileSlot is a target slot backed by a sparse file.
func fileSlot(b *testing.B, dir string, size int64) *os.File {
	b.Helper()
	f, err := os.CreateTemp(dir, "slot")
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	return f
}

func benchInstall(b *testing.B, p *benchPayload, dir string, viaHTTP bool) {
	raw := rawLimit(b, p)
	pf, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer pf.Close()
	st, _ := pf.Stat()
	var src func() payload.Source
	if viaHTTP {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "p.tsp", time.Time{}, pf)
		}))
		defer srv.Close()
		src = func() payload.Source { return payload.FromURL(srv.URL, srv.Client()) }
	} else {
		src = func() payload.Source { return payload.FromFile(pf, st.Size()) }
	}
	var res *payload.Result
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		slot := fileSlot(b, dir, p.m.ImageSize)
		b.StartTimer()
		start := time.Now()
		res, err = payload.Install(b.Context(), src(), payload.Target{Slot: slot, Size: p.m.ImageSize}, payload.InstallOptions{Trust: p.trust})
		elapsed += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(p.m.ImageSize) * float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate/1e6, "MB/s")
	b.ReportMetric(raw/1e6, "raw-MB/s")
	b.ReportMetric(100*rate/raw, "%-of-raw")
	b.ReportMetric(float64(res.Requests), "requests")
	b.Logf("phases of the last run: %v", res.Phases)
}

// syntheticImage writes a synthetic image of size bytes (until testimages images are wired in).
func syntheticImage(b *testing.B, dir string, size int, seed uint64) string {
	b.Helper()
	p := filepath.Join(dir, fmt.Sprintf("usr-%d-%d.img", size, seed))
	if err := os.WriteFile(p, payloadtest.Image(size, seed), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

func benchSize(b *testing.B) int {
	if testing.Short() {
		b.Skip("big benchmark; skipped under -short")
	}
	return 1 << 30
}

func BenchmarkInstallFile(b *testing.B) {
	size := benchSize(b)
	dir := b.TempDir()
	p := buildBench(b, dir, syntheticImage(b, dir, size, 1), payloadtest.Options("1"))
	benchInstall(b, p, dir, false)
}

func BenchmarkInstallHTTP(b *testing.B) {
	size := benchSize(b)
	dir := b.TempDir()
	p := buildBench(b, dir, syntheticImage(b, dir, size, 1), payloadtest.Options("1"))
	benchInstall(b, p, dir, true)
}
