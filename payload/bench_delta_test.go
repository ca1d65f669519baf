package payload_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/klauspost/compress/zstd"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
)

// benchDir is where benchmark images are built. TWINSLOT_BENCH_CACHE keeps them across runs
// (images are deterministic for their options, so a cached file is the same file).
func benchDir(b *testing.B) string {
	if d := os.Getenv("TWINSLOT_BENCH_CACHE"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		return d
	}
	return b.TempDir()
}

// usrImage builds (or finds in the cache) a testimages /usr image.
func usrImage(b *testing.B, dir string, o testimages.UsrOptions) string {
	b.Helper()
	name := fmt.Sprintf("usr-%s-%dM", o.Version, o.Size>>20)
	if o.Base != "" {
		name += fmt.Sprintf("-from-%s-%g", filepath.Base(o.Base), o.Change)
	}
	p := filepath.Join(dir, name+".img")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	start := time.Now()
	if err := testimages.BuildUsr(b.Context(), p, o); err != nil {
		b.Fatal(err)
	}
	b.Logf("built %s in %v", filepath.Base(p), time.Since(start).Round(time.Millisecond))
	return p
}

// changedCompressed is the zstd-compressed size (default level, one frame per file) of the files
// of the image at newer whose content differs from, or is absent in, the image at older: what a
// perfect file-level delta would ship.
func changedCompressed(b *testing.B, older, newer string) (files int, bytesChanged, compressed int64) {
	b.Helper()
	open := func(p string) (*ext4.FileSystem, func()) {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		st, _ := f.Stat()
		fsys, err := ext4.Read(file.New(f, true), st.Size(), 0, 512)
		if err != nil {
			b.Fatal(err)
		}
		return fsys, func() { f.Close() }
	}
	oldFS, c1 := open(older)
	defer c1()
	newFS, c2 := open(newer)
	defer c2()
	read := func(fsys *ext4.FileSystem, p string) ([]byte, bool) {
		r, err := fsys.OpenFile(p, os.O_RDONLY)
		if err != nil {
			return nil, false
		}
		defer r.Close()
		d, err := io.ReadAll(r)
		return d, err == nil
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		b.Fatal(err)
	}
	var walk func(dir string)
	walk = func(dir string) {
		entries, err := newFS.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range entries {
			p := path.Join(dir, e.Name())
			if e.IsDir() {
				if e.Name() != "lost+found" {
					walk(p)
				}
				continue
			}
			nb, ok := read(newFS, p)
			if !ok {
				b.Fatalf("read %s", p)
			}
			if ob, ok := read(oldFS, p); ok && bytes.Equal(ob, nb) {
				continue
			}
			files++
			bytesChanged += int64(len(nb))
			compressed += int64(len(enc.EncodeAll(nb, nil)))
		}
	}
	walk(".")
	return files, bytesChanged, compressed
}

// deltaInstall installs p into an empty slot with older as the active slot and returns the result.
func deltaInstall(b *testing.B, p *benchPayload, older string, o payload.InstallOptions) *payload.Result {
	b.Helper()
	act, err := os.Open(older)
	if err != nil {
		b.Fatal(err)
	}
	defer act.Close()
	ast, _ := act.Stat()
	pf, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer pf.Close()
	pst, _ := pf.Stat()
	slot := fileSlot(b, b.TempDir(), p.m.ImageSize)
	o.Trust = p.trust
	res, err := payload.Install(b.Context(), payload.FromFile(pf, pst.Size()),
		payload.Target{Slot: slot, Size: p.m.ImageSize, Active: act, ActiveSize: ast.Size()}, o)
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// BenchmarkChunking measures the choice of chunking: for fixed-size and content-defined (Rabin)
// chunks of several sizes, how many bytes a host running the base image fetches to install a
// new build where 1%, 5% or 20% of the files changed (the filesystem rebuilt, so blocks move),
// how big the chunk table gets, and what indexing the active slot costs.
func BenchmarkChunking(b *testing.B) {
	if testing.Short() {
		b.Skip("big benchmark; skipped under -short")
	}
	dir := benchDir(b)
	const size = 256 << 20
	base := usrImage(b, dir, testimages.UsrOptions{Version: "100.0.0", Size: size})
	rabin := func(minK, bits, maxK int) payload.Chunking {
		return payload.Chunking{Algorithm: payload.ChunkingRabin, Min: minK << 10, Max: maxK << 10, AverageBits: bits, Polynomial: payload.DefaultPolynomial}
	}
	configs := []struct {
		name string
		c    payload.Chunking
	}{
		{"fixed-64K", payload.FixedChunking(64 << 10)},
		{"fixed-256K", payload.FixedChunking(256 << 10)},
		{"fixed-1M", payload.FixedChunking(1 << 20)},
		{"rabin-16K", rabin(4, 14, 64)},
		{"rabin-64K", rabin(16, 16, 256)},
		{"rabin-256K", rabin(64, 18, 1024)},
		{"rabin-1M", rabin(256, 20, 4096)},
	}
	for _, change := range []float64{0.01, 0.05, 0.20} {
		newer := usrImage(b, dir, testimages.UsrOptions{Version: fmt.Sprintf("100.1.%d", int(change*100)), Base: base, Change: change})
		_, _, changedZ := changedCompressed(b, base, newer)
		for _, cfg := range configs {
			b.Run(fmt.Sprintf("change=%g/%s", change, cfg.name), func(b *testing.B) {
				o := payloadtest.Options("100.1")
				o.Chunking = cfg.c
				p := buildBench(b, b.TempDir(), newer, o)
				var res *payload.Result
				for b.Loop() {
					res = deltaInstall(b, p, base, payload.InstallOptions{})
				}
				b.ReportMetric(float64(res.BytesFetched)/1e6, "fetched-MB")
				b.ReportMetric(float64(res.BytesFetched)/float64(changedZ), "x-changed-files")
				b.ReportMetric(float64(p.m.DataSize)/1e6, "full-MB")
				b.ReportMetric(float64(p.m.ChunkCount), "chunks")
				b.ReportMetric(float64(p.m.TableSize)/1e3, "table-KB")
				b.ReportMetric(res.Phases["index-active"].Seconds(), "index-s")
				b.ReportMetric(float64(res.Requests), "requests")
			})
		}
	}
}

// BenchmarkDelta reports, for the default chunking and a 512 MiB image, the bytes a host fetches
// for builds with 1%, 5% and 20% of the files changed, beside the full compressed payload and the
// compressed size of the changed files alone (target: ≤ 3× at 5%).
func BenchmarkDelta(b *testing.B) {
	if testing.Short() {
		b.Skip("big benchmark; skipped under -short")
	}
	dir := benchDir(b)
	const size = 512 << 20
	base := usrImage(b, dir, testimages.UsrOptions{Version: "200.0.0", Size: size})
	for _, change := range []float64{0.01, 0.05, 0.20} {
		newer := usrImage(b, dir, testimages.UsrOptions{Version: fmt.Sprintf("200.1.%d", int(change*100)), Base: base, Change: change})
		files, changedRaw, changedZ := changedCompressed(b, base, newer)
		b.Run(fmt.Sprintf("change=%g", change), func(b *testing.B) {
			p := buildBench(b, b.TempDir(), newer, payloadtest.Options("200.1"))
			var res *payload.Result
			for b.Loop() {
				res = deltaInstall(b, p, base, payload.InstallOptions{})
			}
			fetched := res.BytesFetched + res.BytesMetadata
			b.ReportMetric(float64(fetched)/1e6, "fetched-MB")
			b.ReportMetric(float64(p.m.DataSize+p.m.TableSize)/1e6, "full-MB")
			b.ReportMetric(float64(changedZ)/1e6, "changed-files-MB")
			b.ReportMetric(float64(fetched)/float64(changedZ), "x-changed-files")
			b.ReportMetric(float64(files), "changed-files")
			b.ReportMetric(float64(changedRaw)/1e6, "changed-raw-MB")
		})
	}
}
