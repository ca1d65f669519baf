package payload_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
)

// rssChildEnv makes the test binary a small launcher: it runs the command after "--" and prints
// the command's peak RSS. Launching from a small process matters: on Linux a child's ru_maxrss
// includes the resident size of the process it was forked from, so measuring straight from the
// (large) benchmark process would report the benchmark's own size.
const rssChildEnv = "TWINSLOT_RSS_LAUNCHER"

func TestMain(m *testing.M) {
	if os.Getenv(rssChildEnv) == "1" {
		os.Exit(rssLauncher(os.Args))
	}
	os.Exit(m.Run())
}

func rssLauncher(args []string) int {
	i := 0
	for i < len(args) && args[i] != "--" {
		i++
	}
	if i+1 >= len(args) {
		fmt.Fprintln(os.Stderr, "rss launcher: no command after --")
		return 2
	}
	cmd := exec.Command(args[i+1], args[i+2:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err := cmd.Run()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		fmt.Printf("maxrss-kib %d\n", ru.Maxrss)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rss launcher:", err)
		return 1
	}
	return 0
}

// childPeakRSS runs bin with args through the launcher and returns its peak RSS in bytes and
// its output.
func childPeakRSS(b *testing.B, bin string, args ...string) (int64, []byte, error) {
	cmd := exec.CommandContext(b.Context(), os.Args[0], append([]string{"-test.run=^$", "--", bin}, args...)...)
	cmd.Env = append(os.Environ(), rssChildEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, stderr.Bytes(), err
	}
	var kib int64
	if _, err := fmt.Sscanf(stdout.String(), "maxrss-kib %d", &kib); err != nil {
		return 0, stderr.Bytes(), fmt.Errorf("launcher output %q: %w", stdout.String(), err)
	}
	return kib * 1024, stderr.Bytes(), nil
}

// BenchmarkApplyRSS runs the built 'payload apply' binary as a child process on a 6 GiB disk
// (2 GiB slots) with a 2 GiB /usr image and reports the child's peak RSS (target ≤ 64 MiB), for a
// full install (nothing reusable), for a delta (5% of the files changed), and for a full install
// whose manifest has nearly the most chunks a payload may have (MaxChunks), where the chunk table
// weighs most.
func BenchmarkApplyRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("big benchmark; skipped under -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skipf("no go tool on PATH to build the payload binary: %v", err)
	}
	dir := benchDir(b)
	tmp := b.TempDir()
	bin := filepath.Join(tmp, "payload")
	if out, err := exec.CommandContext(b.Context(), goBin, "build", "-o", bin, "github.com/twinslot/twinslot/tools/cmd/payload").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	const diskSize = 6 << 30
	slot := testimages.SlotSize(diskSize)
	base := usrImage(b, dir, testimages.UsrOptions{Version: "300.0.0", Size: slot})
	delta := usrImage(b, dir, testimages.UsrOptions{Version: "300.1.5", Base: base, Change: 0.05})
	full := usrImage(b, dir, testimages.UsrOptions{Version: "301.0.0", Size: slot})

	k := payloadtest.NewKey(b, "")
	trust := payloadtest.WriteTrustRoot(b, tmp, payloadtest.TrustRoot(b, 1, 0, k))
	// Runs of zeros are one chunk each, so 13 KiB chunks of this image (a quarter zeros) come to
	// nearly MaxChunks.
	maxChunks := payload.FixedChunking(13 << 10)
	for _, tc := range []struct {
		name, image string
		chunking    *payload.Chunking
	}{{"full", full, nil}, {"delta-0.05", delta, nil}, {"max-chunks", full, &maxChunks}} {
		b.Run(tc.name, func(b *testing.B) {
			p := filepath.Join(tmp, tc.name+".tsp")
			o := payloadtest.Options("300.1")
			if tc.chunking != nil {
				o.Chunking = *tc.chunking
			}
			m := payloadtest.BuildFile(b, tc.image, p, o, k)
			if tc.chunking != nil && len(m.Chunks) < payload.MaxChunks*9/10 {
				b.Fatalf("%s: %d chunks, want nearly MaxChunks (%d)", tc.name, len(m.Chunks), payload.MaxChunks)
			}
			var rss int64
			var elapsed time.Duration
			for b.Loop() {
				b.StopTimer()
				disk := filepath.Join(tmp, "disk.img")
				if err := testimages.BuildDisk(b.Context(), disk, testimages.DiskOptions{Size: diskSize, Usr: base}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				peak, out, err := childPeakRSS(b, bin, "apply", "--trust", trust, "--disk", disk, p)
				if err != nil {
					b.Fatalf("payload apply: %v\n%s", err, out)
				}
				elapsed += time.Since(start)
				rss = max(rss, peak)
				b.Logf("%s", bytes.TrimSpace(out))
				os.Remove(disk)
			}
			b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
			b.ReportMetric(float64(slot)*float64(b.N)/elapsed.Seconds()/1e6, "slot-MB/s")
			b.ReportMetric(float64(len(m.Chunks)), "chunks")
		})
	}
}
