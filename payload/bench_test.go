package payload_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
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

// dataOffset is where p's data section starts in its file (the table follows it, last).
func (p *benchPayload) dataOffset(b *testing.B) int64 {
	b.Helper()
	st, err := os.Stat(p.path)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size() - p.m.TableSize - p.m.DataSize
}

// storedData reads p's data section into memory.
func storedData(b *testing.B, p *benchPayload) []byte {
	b.Helper()
	f, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, p.m.DataSize)
	if _, err := f.ReadAt(data, p.dataOffset(b)); err != nil {
		b.Fatal(err)
	}
	return data
}

// rawLimit decodes and hashes every stored chunk of p (its data section in memory) once, on the
// given number of goroutines (each with its own decoder, taking chunks in turn): "SHA-256 + zstd
// decode of the same bytes", the floor any installer has to pay, with no I/O at all. It returns
// the wall time, and the CPU time of the whole process meanwhile.
func rawLimit(b *testing.B, p *benchPayload, data []byte, workers int) (wall, cpu time.Duration) {
	b.Helper()
	var next atomic.Int64
	work := func(d *benchDecoder) error {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(p.m.Chunks) {
				return nil
			}
			c := p.m.Chunks[i]
			if c.Encoding == payload.EncodingZero {
				continue // zero chunks are neither decoded nor hashed from data
			}
			if _, err := d.plain(c, data[c.DataOffset:c.DataOffset+int64(c.DataLength)]); err != nil {
				return err
			}
		}
	}
	return timeWorkers(b, p, "raw", workers, work)
}

// bareInstall is the least any installer of p over HTTP does, measured to put the 70% target
// in proportion: it fetches the data section from url in Range requests of up to 8 MiB, 2 per
// core in flight, decodes and hashes every chunk (as rawLimit) and writes it into a fresh file
// in dir at its image offset. Nothing else: no envelope, no scans of the slots, no read-back,
// no sync, no progress. It returns the wall time and the process's CPU time meanwhile.
func bareInstall(b *testing.B, url string, p *benchPayload, dir string) (wall, cpu time.Duration) {
	b.Helper()
	dataOff := p.dataOffset(b)
	// Stored neighbours in groups of up to 8 MiB (chunks may share stored bytes).
	chunks := slices.DeleteFunc(slices.Clone(p.m.Chunks), func(c payload.Chunk) bool { return c.Encoding == payload.EncodingZero })
	slices.SortFunc(chunks, func(a, b payload.Chunk) int { return cmp.Compare(a.DataOffset, b.DataOffset) })
	var groups [][]payload.Chunk
	var groupStart int64
	for _, c := range chunks {
		if len(groups) == 0 || c.DataOffset+int64(c.DataLength)-groupStart > 8<<20 {
			groups, groupStart = append(groups, nil), c.DataOffset
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], c)
	}
	f, err := os.CreateTemp(dir, "bare")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	var next atomic.Int64
	work := func(d *benchDecoder) error {
		buf := make([]byte, 8<<20)
		for {
			g := int(next.Add(1) - 1)
			if g >= len(groups) {
				return nil
			}
			first := groups[g][0]
			var n int64
			for _, c := range groups[g] {
				n = max(n, c.DataOffset+int64(c.DataLength)-first.DataOffset)
			}
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", dataOff+first.DataOffset, dataOff+first.DataOffset+n-1))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			_, err = io.ReadFull(resp.Body, buf[:n])
			resp.Body.Close()
			if err != nil {
				return err
			}
			for _, c := range groups[g] {
				plain, err := d.plain(c, buf[c.DataOffset-first.DataOffset:][:c.DataLength])
				if err != nil {
					return err
				}
				if _, err := f.WriteAt(plain, c.Offset); err != nil {
					return err
				}
			}
		}
	}
	return timeWorkers(b, p, "bare", 2*runtime.GOMAXPROCS(0), work)
}

// copyFloor measures the byte moves that any install of p over HTTP makes on top of decoding and
// hashing, each once, in their cheapest form: receive the data section from url in one request
// into one reused buffer (the server's sendfile included), write the image's non-zero chunks
// from memory (img) into a fresh file in dir in runs of up to 8 MiB at their image offsets, and
// read those runs back (the design's final re-hash reads every byte of the slot again; here
// without hashing, and without the zero areas the install also reads). It returns the CPU time
// of the whole process over the three. The raw limit's CPU time plus this, spread perfectly over
// every core, is the least wall time an install could take: the ceiling on %-of-raw-par that the
// machine's copies leave to any installer, reported beside the install's figure.
func copyFloor(b *testing.B, url string, p *benchPayload, dir string, img []byte) time.Duration {
	b.Helper()
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	buf := make([]byte, 8<<20)
	labelled("floor", func() {
		dataOff := p.dataOffset(b)
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", dataOff, dataOff+p.m.DataSize-1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var got int64
		for {
			n, err := resp.Body.Read(buf)
			got += int64(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
		if got != p.m.DataSize {
			b.Fatalf("copy floor: received %d bytes of %d", got, p.m.DataSize)
		}
		// Runs of neighbouring non-zero chunks, up to 8 MiB each.
		var runs [][2]int64
		for _, c := range p.m.Chunks {
			if c.Encoding == payload.EncodingZero {
				continue
			}
			end := c.Offset + int64(c.Length)
			if k := len(runs) - 1; k >= 0 && runs[k][1] == c.Offset && end-runs[k][0] <= 8<<20 {
				runs[k][1] = end
				continue
			}
			runs = append(runs, [2]int64{c.Offset, end})
		}
		f, err := os.CreateTemp(dir, "floor")
		if err != nil {
			b.Fatal(err)
		}
		defer func() { f.Close(); os.Remove(f.Name()) }()
		for _, r := range runs {
			if _, err := f.WriteAt(img[r[0]:r[1]], r[0]); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range runs {
			if _, err := f.ReadAt(buf[:r[1]-r[0]], r[0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	return rusageCPU(r0, r1)
}

// benchDecoder decodes and checks stored chunks of one payload, one goroutine's worth.
type benchDecoder struct {
	dec *zstd.Decoder
	out []byte
}

func newBenchDecoder(p *benchPayload) (*benchDecoder, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &benchDecoder{dec: dec, out: make([]byte, 0, p.m.Chunking.Max+p.m.Chunking.Size)}, nil
}

func (d *benchDecoder) close() { d.dec.Close() }

// plain returns the decoded bytes of non-zero chunk c, stored as stored, after checking their
// SHA-256 (valid until the next call).
func (d *benchDecoder) plain(c payload.Chunk, stored []byte) ([]byte, error) {
	plain := stored
	if c.Encoding == payload.EncodingZstd {
		var err error
		if plain, err = d.dec.DecodeAll(stored, d.out[:0]); err != nil {
			return nil, err
		}
	}
	if sha256.Sum256(plain) != c.SHA256 {
		return nil, fmt.Errorf("chunk at %d: hash mismatch", c.Offset)
	}
	return plain, nil
}

// timeWorkers runs work on the given number of goroutines, each with its own decoder for p's
// chunks, and returns the wall time and the CPU time of the whole process meanwhile; an error
// of any fails the benchmark. The goroutines carry the profiler label step (see labelled).
func timeWorkers(b *testing.B, p *benchPayload, step string, workers int, work func(*benchDecoder) error) (wall, cpu time.Duration) {
	b.Helper()
	errs := make(chan error, workers)
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	for range workers {
		labelled(step, func() {
			go func() {
				d, err := newBenchDecoder(p)
				if err != nil {
					errs <- err
					return
				}
				defer d.close()
				errs <- work(d)
			}()
		})
	}
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	wall = time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	return wall, rusageCPU(r0, r1)
}

func rusageCPU(r0, r1 syscall.Rusage) time.Duration {
	return time.Duration(r1.Utime.Nano() - r0.Utime.Nano() + r1.Stime.Nano() - r0.Stime.Nano())
}

// diskLimit writes size bytes of the image (the real bytes, read into memory beforehand) into a
// fresh file in dir in 1 MiB writes and fsyncs it: the floor the slot's storage sets on any
// installer, which has to put every byte down durably. It returns the wall time.
func diskLimit(b *testing.B, dir string, img []byte) time.Duration {
	b.Helper()
	f, err := os.CreateTemp(dir, "disklimit")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	start := time.Now()
	for off := 0; off < len(img); off += 1 << 20 {
		if _, err := f.Write(img[off:min(off+1<<20, len(img))]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
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
// limits measured in the same run on the same stored bytes, right before each install (so that
// a machine whose load changes during the run weighs on both alike): raw-MB/s on one goroutine
// (the definition) and raw-par-MB/s on GOMAXPROCS goroutines (the install uses every
// core, so this is the stricter ceiling). disk-MB/s is the third limit, writing the same image
// into the same directory and fsyncing it; %-of-limit compares the install with the slower of
// raw-MB/s and disk-MB/s, since an install can be no faster than either. cpu-s/op against
// raw-cpu-s, and their ratio %-cpu-of-raw, show what the install costs beyond decoding and
// hashing, whatever the load.
func benchInstall(b *testing.B, p *benchPayload, dir string, viaHTTP bool) {
	data := storedData(b, p)
	img, err := os.ReadFile(p.image)
	if err != nil {
		b.Fatal(err)
	}
	pf, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer pf.Close()
	st, _ := pf.Stat()
	var src func() payload.Source
	if viaHTTP {
		srv := serveBench(p)
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
	var elapsed, cpu, raw, rawCPU, rawPar, disk time.Duration
	for b.Loop() {
		b.StopTimer()
		w, c := rawLimit(b, p, data, 1)
		wp, _ := rawLimit(b, p, data, runtime.GOMAXPROCS(0))
		raw, rawCPU, rawPar = raw+w, rawCPU+c, rawPar+wp
		disk += diskLimit(b, dir, img)
		b.StartTimer()
		r, d, c := install()
		res, elapsed, cpu = r, elapsed+d, cpu+c
	}
	image := reportInstall(b, p.m.ImageSize, res, elapsed, cpu, rawCPU, rawPar, disk)
	b.ReportMetric(image/raw.Seconds()/1e6, "raw-MB/s")
	b.ReportMetric(100*raw.Seconds()/elapsed.Seconds(), "%-of-raw")
	// The install decodes and writes at once, so its ceiling is the slower of the two limits.
	b.ReportMetric(100*max(raw, disk).Seconds()/elapsed.Seconds(), "%-of-limit")
	b.Logf("phases of the last run: %v", res.Phases)
}

// reportInstall reports what the install benchmarks share, over b.N installs of imageSize
// bytes (res the last): the install's rate, the all-core raw limit (rawPar) and the disk's,
// the install's share of each, its CPU beside the raw limit's, and its requests. It returns the
// image bytes of all b.N installs.
func reportInstall(b *testing.B, imageSize int64, res *payload.Result, elapsed, cpu, rawCPU, rawPar, disk time.Duration) float64 {
	n := float64(b.N)
	image := float64(imageSize) * n
	b.ReportMetric(image/elapsed.Seconds()/1e6, "MB/s")
	b.ReportMetric(image/rawPar.Seconds()/1e6, "raw-par-MB/s")
	b.ReportMetric(100*rawPar.Seconds()/elapsed.Seconds(), "%-of-raw-par")
	b.ReportMetric(image/disk.Seconds()/1e6, "disk-MB/s")
	b.ReportMetric(100*disk.Seconds()/elapsed.Seconds(), "%-of-disk")
	// CPU time is steadier than wall time on a loaded machine: what the install costs beyond
	// decoding and hashing (the server's share included when it runs in the process).
	b.ReportMetric(cpu.Seconds()/n, "cpu-s/op")
	b.ReportMetric(rawCPU.Seconds()/n, "raw-cpu-s")
	b.ReportMetric(100*rawCPU.Seconds()/cpu.Seconds(), "%-cpu-of-raw")
	b.ReportMetric(float64(res.Requests), "requests")
	return image
}

// serveBench serves p's file as omahad does (a file opened per request): net/http then sends
// ranges with sendfile, so the server's share of the CPU is what a real server would cost.
// serveBench serves p over loopback HTTP; its goroutines carry the profiler label step=server.
func serveBench(p *benchPayload) (srv *httptest.Server) {
	labelled("server", func() {
		srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(p.path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			http.ServeContent(w, r, "p.tsp", time.Time{}, f)
		}))
	})
	return srv
}

// labelled runs f with the profiler label step=step, which the goroutines f starts inherit: a
// benchmark's -cpuprofile then splits by step (go tool pprof -tagfocus step=install).
func labelled(step string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("step", step), func(context.Context) { f() })
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
