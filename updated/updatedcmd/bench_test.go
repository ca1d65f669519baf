package updatedcmd_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbustest"
)

// BenchmarkRSS measures the memory of the updated binary, built for the benchmark and run as
// a subprocess on a 6 GiB test disk (2 GiB /usr slots) against the real update server:
//
//	idle: after start-up, waiting for its first check  → idle-rss-MiB (VmRSS), idle-peak-MiB (VmHWM)
//	install-2GiB: a 2 GiB image (a new build of the running one, 5 % of its files changed), from
//	         AttemptUpdate to UPDATED_NEED_REBOOT       → peak-rss-MiB (VmHWM), install-s
//	install-full-2GiB: an unrelated 2 GiB image, every chunk fetched and decoded → the same
//
// The peak is the kernel's high-water mark of the process's own memory (VmHWM in
// /proc/PID/status), read just before it is stopped. Not ru_maxrss: Go starts children with
// clone(CLONE_VM|CLONE_VFORK), and Linux folds the parent's RSS high-water mark into the
// child's ru_maxrss at execve, so a child of a big test process reports the test's size.
//
// Targets (issue 5 §8): idle < 20 MiB, install < 64 MiB. Building the images and the payload
// takes a few minutes; run it with `go test -run '^$' -bench RSS -benchtime 1x ./updated/updatedcmd`.
func BenchmarkRSS(b *testing.B) {
	if testing.Short() {
		b.Skip("builds 2 GiB images; skipped in -short mode")
	}
	w := newRSSWorld(b)
	b.Run("idle", func(b *testing.B) {
		for b.Loop() {
			p := w.start(b, w.confDelta)
			time.Sleep(3 * time.Second) // let start-up garbage be collected
			rss, hwm := procStatus(b, p.cmd.Process.Pid)
			p.stop(b)
			b.ReportMetric(rss/(1<<20), "idle-rss-MiB")
			b.ReportMetric(hwm/(1<<20), "idle-peak-MiB")
		}
	})
	install := func(conf string) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				w.resetDisk(b)
				p := w.start(b, conf)
				start := time.Now()
				p.installNow(b)
				took := time.Since(start)
				_, hwm := procStatus(b, p.cmd.Process.Pid)
				p.stop(b)
				b.ReportMetric(hwm/(1<<20), "peak-rss-MiB")
				b.ReportMetric(took.Seconds(), "install-s")
			}
		}
	}
	b.Run("install-2GiB", install(w.confDelta))
	b.Run("install-full-2GiB", install(w.confFull))
}

type rssWorld struct {
	dir, bin, disk, pristine, root, etc string
	confDelta, confFull                 string // update.conf naming the server with each payload
	bus                                 *dbustest.Daemon
}

func newRSSWorld(b *testing.B) *rssWorld {
	ctx := b.Context()
	dir := b.TempDir()
	w := &rssWorld{dir: dir, bin: filepath.Join(dir, "updated"), pristine: filepath.Join(dir, "pristine.img"),
		disk: filepath.Join(dir, "disk.img"), etc: filepath.Join(dir, "etc")}
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", w.bin, "github.com/twinslot/twinslot/updated/cmd/updated").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	const diskSize = 6 << 30
	size := testimages.SlotSize(diskSize)
	usr1, usr2, usr3 := filepath.Join(dir, "usr1.img"), filepath.Join(dir, "usr2.img"), filepath.Join(dir, "usr3.img")
	t0 := time.Now()
	if err := testimages.BuildUsr(ctx, usr1, testimages.UsrOptions{Version: "1.0.0", Size: size}); err != nil {
		b.Fatal(err)
	}
	if err := testimages.BuildDisk(ctx, w.pristine, testimages.DiskOptions{Usr: usr1, Size: diskSize}); err != nil {
		b.Fatal(err)
	}
	if err := testimages.BuildUsr(ctx, usr2, testimages.UsrOptions{Version: "2.0.0", Base: usr1, Change: 0.05}); err != nil {
		b.Fatal(err)
	}
	if err := testimages.BuildUsr(ctx, usr3, testimages.UsrOptions{Version: "3.0.0", Size: size}); err != nil {
		b.Fatal(err)
	}
	os.Remove(usr1)
	key := payloadtest.NewKey(b, "")
	trust := payloadtest.TrustRoot(b, 1, 0, key)
	os.MkdirAll(w.etc, 0o755)
	serve := func(usr, version string) string { // a server offering usr as version; returns an update.conf
		srv := omahatest.New(b)
		srv.CreateApp(b, payload.DefaultAppID, trust)
		p := filepath.Join(dir, version+".tsp")
		payloadtest.BuildFile(b, usr, p, payloadtest.Options(version), key)
		os.Remove(usr)
		srv.Publish(b, "stable", p)
		os.Remove(p)
		conf := filepath.Join(w.etc, version+".conf")
		os.WriteFile(conf, []byte("SERVER="+srv.UpdateURL+"\n"), 0o644)
		return conf
	}
	w.confDelta, w.confFull = serve(usr2, "2.0.0"), serve(usr3, "3.0.0")
	b.Logf("images, payload and server ready in %s", time.Since(t0).Round(time.Second))

	w.resetDisk(b)
	_, rel, err := testimages.Boot(w.disk)
	if err != nil {
		b.Fatal(err)
	}
	w.root = fakeRoot(b, w.disk, rel, omahatest.NewMachineID())
	payloadtest.WriteTrustRoot(b, w.etc, trust)
	w.bus = dbustest.New(b)
	return w
}

// resetDisk gives the next run a fresh disk (sparse copy of the built one).
func (w *rssWorld) resetDisk(b *testing.B) {
	if out, err := exec.Command("cp", "--sparse=always", w.pristine, w.disk).CombinedOutput(); err != nil {
		b.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(w.disk + ".cmdline")
	if _, err := os.Stat(w.pristine + ".cmdline"); err == nil {
		exec.Command("cp", w.pristine+".cmdline", w.disk+".cmdline").Run()
	}
}

type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	client *dbusapi.Client
}

func (w *rssWorld) start(b *testing.B, conf string) *proc {
	state := filepath.Join(b.TempDir(), "state")
	var stderr bytes.Buffer
	cmd := exec.Command(w.bin, "--root", w.root, "--disk", w.disk, "--state-dir", state, "--etc", w.etc,
		"--config", conf, "--bus", w.bus.Addr, "--tpm", "none", "--log-level", "warn", "--log-stderr")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &stderr, client: dbusapi.NewClient(w.bus.Conn(b))}
	for i := 0; ; i++ {
		if _, err := p.client.GetStatus(b.Context()); err == nil {
			return p
		}
		if i > 3000 {
			p.stop(b)
			b.Fatalf("updated did not start:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// installNow asks for a check and waits for UPDATED_NEED_REBOOT.
func (p *proc) installNow(b *testing.B) {
	ctx, cancel := context.WithTimeout(b.Context(), 20*time.Minute)
	defer cancel()
	sub, err := p.client.Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	if err := p.client.AttemptUpdate(ctx); err != nil {
		b.Fatal(err)
	}
	for {
		s, err := sub.Next(ctx)
		if err != nil {
			b.Fatalf("waiting for the install: %v\n%s", err, p.stderr.String())
		}
		if s.Status == nil {
			continue
		}
		switch s.Status.CurrentOperation {
		case dbusapi.OpUpdatedNeedReboot:
			return
		case dbusapi.OpReportingErrorEvent:
			b.Fatalf("the install failed:\n%s", p.stderr.String())
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(b *testing.B) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		b.Fatalf("updated exited with %v:\n%s", err, p.stderr.String())
	}
}

// procStatus returns VmRSS and VmHWM of pid in bytes.
func procStatus(b *testing.B, pid int) (rss, hwm float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if k == "VmRSS" {
			rss = n * 1024
		} else {
			hwm = n * 1024
		}
	}
	return rss, hwm
}
