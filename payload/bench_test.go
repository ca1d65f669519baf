package payload_test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
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

// rawLimit decodes and hashes every stored chunk of p once, on the given number of goroutines
// (each with its own decoder, taking chunks in turn): the bytes/second of "SHA-256 + zstd decode
// of the same bytes", the floor any installer has to pay, with no I/O at all. The stored bytes are
// read into memory first (untimed). cpu is the CPU time of the whole process during the timed part.
func rawLimit(b *testing.B, p *benchPayload, workers int) (bytesPerSec float64, cpu time.Duration) {
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
	var next atomic.Int64
	work := func() error {
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer dec.Close()
		out := make([]byte, 0, p.m.Chunking.Max+p.m.Chunking.Size)
		for {
			i := int(next.Add(1) - 1)
			if i >= len(p.m.Chunks) {
				return nil
			}
			c := p.m.Chunks[i]
			stored := data[c.DataOffset : c.DataOffset+int64(c.DataLength)]
			var plain []byte
			switch c.Encoding {
			case payload.EncodingZstd:
				if plain, err = dec.DecodeAll(stored, out[:0]); err != nil {
					return err
				}
			case payload.EncodingRaw:
				plain = stored
			default:
				continue // zero chunks are neither decoded nor hashed from data
			}
			if sha256.Sum256(plain) != c.SHA256 {
				return fmt.Errorf("raw limit: chunk %d: hash mismatch", i)
			}
		}
	}
	errs := make(chan error, workers)
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	for range workers {
		go func() { errs <- work() }()
	}
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	return float64(p.m.ImageSize) / wall.Seconds(), rusageCPU(r0, r1)
}

func rusageCPU(r0, r1 syscall.Rusage) time.Duration {
	return time.Duration(r1.Utime.Nano() - r0.Utime.Nano() + r1.Stime.Nano() - r0.Stime.Nano())
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

// benchInstall reports the install rate (image bytes per second of Install) beside two raw
// limits measured in the same run on the same stored bytes: raw-MB/s on one goroutine (the
// issue's definition) and raw-par-MB/s on GOMAXPROCS goroutines (the install uses every core, so
// this is the fair ceiling), and the CPU time of each (cpu-s/op against raw-cpu-s shows what the
// install costs beyond decoding and hashing, whatever the load on the machine).
func benchInstall(b *testing.B, p *benchPayload, dir string, viaHTTP bool) {
	raw, rawCPU := rawLimit(b, p, 1)
	rawPar, _ := rawLimit(b, p, runtime.GOMAXPROCS(0))
	pf, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer pf.Close()
	st, _ := pf.Stat()
	var src func() payload.Source
	if viaHTTP {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "p.tsp", time.Time{}, io.NewSectionReader(pf, 0, st.Size()))
		}))
		defer srv.Close()
		src = func() payload.Source { return payload.FromURL(srv.URL, srv.Client()) }
	} else {
		src = func() payload.Source { return payload.FromFile(pf, st.Size()) }
	}
	// install runs one install into a fresh slot file; it returns the wall time and the CPU time
	// (user+sys of this process, so the HTTP server's share too) of Install alone.
	install := func() (*payload.Result, time.Duration, time.Duration) {
		slot := fileSlot(b, dir, p.m.ImageSize)
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		start := time.Now()
		res, err := payload.Install(b.Context(), src(), payload.Target{Slot: slot, Size: p.m.ImageSize}, payload.InstallOptions{Trust: p.trust})
		d := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		if err != nil {
			b.Fatal(err)
		}
		slot.Close()
		os.Remove(slot.Name())
		return res, d, rusageCPU(r0, r1)
	}
	// One untimed warm-up: the first install after building a GiB of files competes with the
	// kernel writing those files back.
	b.StopTimer()
	install()
	b.StartTimer()
	var res *payload.Result
	var elapsed, cpu time.Duration
	for b.Loop() {
		r, d, c := install()
		res, elapsed, cpu = r, elapsed+d, cpu+c
	}
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(rawCPU.Seconds(), "raw-cpu-s")
	rate := float64(p.m.ImageSize) * float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate/1e6, "MB/s")
	b.ReportMetric(raw/1e6, "raw-MB/s")
	b.ReportMetric(100*rate/raw, "%-of-raw")
	b.ReportMetric(rawPar/1e6, "raw-par-MB/s")
	b.ReportMetric(100*rate/rawPar, "%-of-raw-par")
	b.ReportMetric(float64(res.Requests), "requests")
	b.Logf("phases of the last run: %v", res.Phases)
}

func benchSize(b *testing.B) int64 {
	if testing.Short() {
		b.Skip("big benchmark; skipped under -short")
	}
	return 1 << 30
}

// BenchmarkInstallFile installs a 1 GiB testimages /usr image from a payload file into an empty
// slot file, beside the raw limits (decoding and hashing the same stored bytes in memory, on one
// goroutine and on GOMAXPROCS goroutines).
func BenchmarkInstallFile(b *testing.B) {
	size := benchSize(b)
	img := usrImage(b, benchDir(b), testimages.UsrOptions{Version: "400.0.0", Size: size})
	dir := b.TempDir()
	benchInstall(b, buildBench(b, dir, img, payloadtest.Options("400.0.0")), dir, false)
}

// BenchmarkInstallHTTP is BenchmarkInstallFile through a loopback HTTP server (Range requests).
func BenchmarkInstallHTTP(b *testing.B) {
	size := benchSize(b)
	img := usrImage(b, benchDir(b), testimages.UsrOptions{Version: "400.0.0", Size: size})
	dir := b.TempDir()
	benchInstall(b, buildBench(b, dir, img, payloadtest.Options("400.0.0")), dir, true)
}
