package payload_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
)

// BenchmarkApply is what 'payload apply' does on a host, the path the README's figures are of:
// a full install of an unrelated /usr image over loopback HTTP into the inactive slot of a GPT
// disk whose active slot holds the old image (scans of both slots included), beside the raw
// limit measured in the same run on the same stored bytes (SHA-256 + zstd decode on all cores,
// no I/O). %-of-raw-par is the figure (target ≥ 70); %-cpu-of-raw, the same in CPU time,
// is steadier on a shared machine. bare-%-of-raw-par is the same figure for the least any
// installer over HTTP does (bareInstall: fetch, decode, hash, write; nothing else), and
// %-of-bare is the install's speed beside it: the share of the gap to the raw limit that is the
// install's own. ceiling-%-of-raw-par is the most any installer over HTTP could reach on this
// machine: the raw limit's CPU time plus the cheapest run of copyFloor (receive, write, read
// back), spread perfectly over every core. Run one size with
// -bench 'Apply/256MiB'; add -cpuprofile/-blockprofile to see where the time goes (each step
// carries a profiler label: -tagfocus step=install, raw, bare or server). With
// TMPDIR=/dev/shm the disk image lives in memory, which takes the disk's durable write rate out
// of the figure and leaves the install's own work.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int64{256 << 20, 2 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			if testing.Short() {
				b.Skip("big benchmark; skipped under -short")
			}
			benchApply(b, size)
		})
	}
}

func benchApply(b *testing.B, size int64) {
	dir := benchDir(b)
	tmp := b.TempDir()
	base := usrImage(b, dir, testimages.UsrOptions{Version: "500.0.0", Size: size})
	full := usrImage(b, dir, testimages.UsrOptions{Version: "501.0.0", Size: size})
	p := buildBench(b, tmp, full, payloadtest.Options("501.0.0"))
	data := storedData(b, p)
	img, err := os.ReadFile(full) // for the disk's own limit, written beside the disk image
	if err != nil {
		b.Fatal(err)
	}
	srv := serveBench(p)
	defer srv.Close()
	diskSize := (max(3*size+3<<20, testimages.MinDiskSize) + 1<<20 - 1) / (1 << 20) * (1 << 20)
	diskPath := filepath.Join(tmp, "disk.img")
	var res *payload.Result
	var elapsed, rawPar, cpu, rawCPU, disk, bare, bareCPU time.Duration
	floorCPU := time.Duration(math.MaxInt64)
	for b.Loop() {
		b.StopTimer()
		os.Remove(diskPath)
		if err := testimages.BuildDisk(b.Context(), diskPath, testimages.DiskOptions{Size: diskSize, Usr: base}); err != nil {
			b.Fatal(err)
		}
		w, c := rawLimit(b, p, data, runtime.GOMAXPROCS(0))
		rawPar, rawCPU = rawPar+w, rawCPU+c
		disk += diskLimit(b, tmp, img)
		w, c = bareInstall(b, srv.URL, p, tmp)
		bare, bareCPU = bare+w, bareCPU+c
		floorCPU = min(floorCPU, copyFloor(b, srv.URL, p, tmp, img))
		d, err := partition.Open(diskPath)
		if err != nil {
			b.Fatal(err)
		}
		active, err := d.SlotByLabel("USR-A")
		if err != nil {
			b.Fatal(err)
		}
		target, err := d.Other(active)
		if err != nil {
			b.Fatal(err)
		}
		// The steps above wrote gigabytes without waiting for the disk; an install starts on a
		// disk that is not still writing them back.
		syscall.Sync()
		b.StartTimer()
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		start := time.Now()
		var r *payload.Result
		labelled("install", func() {
			r, err = payload.Install(b.Context(), payload.FromURL(srv.URL, nil), payload.Target{
				Slot: d.SlotIO(target), Size: target.Size, Active: d.SlotReader(active), ActiveSize: active.Size,
			}, payload.InstallOptions{Trust: p.trust, BeforeWrite: func() error { return d.BeginInstall(target) }})
			if err == nil {
				err = d.Sync()
			}
		})
		elapsed += time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		cpu += rusageCPU(r0, r1)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		d.Close()
		res = r
		b.StartTimer()
	}
	reportInstall(b, p.m.ImageSize, res, elapsed, cpu, rawCPU, rawPar, disk)
	b.ReportMetric(100*rawPar.Seconds()/bare.Seconds(), "bare-%-of-raw-par")
	b.ReportMetric(100*bare.Seconds()/elapsed.Seconds(), "%-of-bare")
	b.ReportMetric(bareCPU.Seconds()/float64(b.N), "bare-cpu-s")
	// The most %-of-raw-par any installer could reach here: the raw limit's CPU time plus the
	// copies it cannot avoid (the cheapest of the runs'), spread perfectly over every core,
	// beside the raw limit's wall time.
	n := float64(b.N)
	b.ReportMetric(floorCPU.Seconds(), "copy-cpu-s")
	b.ReportMetric(100*rawPar.Seconds()/n/((rawCPU.Seconds()/n+floorCPU.Seconds())/float64(runtime.GOMAXPROCS(0))), "ceiling-%-of-raw-par")
	b.Logf("phases of the last run: %v; reused active %d, fetched %d", res.Phases, res.BytesReusedActive, res.BytesFetched)
}
