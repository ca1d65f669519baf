package updatedcmd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbustest"
	"github.com/twinslot/twinslot/updated/updatedcmd"
)

// fakeRoot makes a directory that stands in for a host's "/" booted from diskPath's last
// testimages.Boot: proc/cmdline, usr/lib/os-release, etc/machine-id, the boot id.
func fakeRoot(t testing.TB, diskPath string, rel testimages.Release, machineID string) string {
	t.Helper()
	root := t.TempDir()
	cmdline, err := os.ReadFile(testimages.CmdlinePath(diskPath))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"proc/cmdline":                   string(cmdline),
		"proc/sys/kernel/random/boot_id": "3c2a5e7e-5b8e-4d7a-9f51-1b2c3d4e5f60\n",
		"etc/machine-id":                 machineID + "\n",
		"usr/lib/os-release":             fmt.Sprintf("ID=%s\nVERSION=%s\nBOARD=%s\n", rel.ID, rel.Version, rel.Board),
	}
	for p, c := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fixture is a test disk booted on 1.0.0 (built with o1), a fake root, and the real update
// server publishing 2.0.0 (built from o1's image with o2) signed for the trust root in etc.
type fixture struct{ dir, disk, root, etc, conf string }

func newFixture(t *testing.T, o1, o2 testimages.UsrOptions) fixture {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	f := fixture{dir: dir, disk: filepath.Join(dir, "disk.img"), etc: filepath.Join(dir, "etc")}
	usr1, usr2 := filepath.Join(dir, "usr1.img"), filepath.Join(dir, "usr2.img")
	o1.Version, o1.Size = "1.0.0", testimages.SlotSize(testimages.MinDiskSize)
	if err := testimages.BuildUsr(ctx, usr1, o1); err != nil {
		t.Fatal(err)
	}
	if err := testimages.BuildDisk(ctx, f.disk, testimages.DiskOptions{Usr: usr1, Size: testimages.MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	o2.Version, o2.Base, o2.Change = "2.0.0", usr1, 0.05
	if err := testimages.BuildUsr(ctx, usr2, o2); err != nil {
		t.Fatal(err)
	}
	_, rel, err := testimages.Boot(f.disk)
	if err != nil {
		t.Fatal(err)
	}
	srv := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, key)
	srv.CreateApp(t, payload.DefaultAppID, trust)
	p := filepath.Join(dir, "2.0.0.tsp")
	payloadtest.BuildFile(t, usr2, p, payloadtest.Options("2.0.0"), key)
	srv.Publish(t, "stable", p)

	f.root = fakeRoot(t, f.disk, rel, omahatest.NewMachineID())
	os.MkdirAll(f.etc, 0o755)
	payloadtest.WriteTrustRoot(t, f.etc, trust)
	f.conf = filepath.Join(f.etc, "update.conf")
	os.WriteFile(f.conf, []byte("SERVER="+srv.UpdateURL+"\n"), 0o644)
	return f
}

// TestDaemon runs the daemon in-process on a test disk with a fake root, against the real update
// server and a private D-Bus, until the update is installed, and checks it over D-Bus.
func TestDaemon(t *testing.T) {
	ctx := t.Context()
	f := newFixture(t, testimages.UsrOptions{}, testimages.UsrOptions{})
	dir, disk, root, etc, conf := f.dir, f.disk, f.root, f.etc, f.conf
	bus := dbustest.New(t)

	var stderr omahatest.SyncBuffer
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- updatedcmd.Run(dctx, []string{"--root", root, "--disk", disk, "--state-dir", filepath.Join(dir, "state"),
			"--etc", etc, "--config", conf, "--bus", bus.Addr, "--tpm", "none", "--log-level", "debug"}, nil, cli.IO{Stdout: &stderr, Stderr: &stderr})
	}()
	defer func() {
		cancel()
		<-done
	}()
	c := dbusapi.NewClient(bus.Conn(t))
	deadline := time.Now().Add(2 * time.Minute)
	var st dbusapi.Status
	for st.CurrentOperation == "" && time.Now().Before(deadline) {
		st, _ = c.GetStatus(ctx)
		time.Sleep(20 * time.Millisecond)
	}
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := c.AttemptUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	for st.CurrentOperation != dbusapi.OpUpdatedNeedReboot {
		s, err := sub.Next(wctx)
		if err != nil {
			t.Fatalf("waiting for UPDATED_NEED_REBOOT (last %+v): %v\n%s", st, err, stderr.String())
		}
		if s.Status != nil {
			st = *s.Status
		}
	}
	bs, err := c.GetBootStatus(ctx)
	if err != nil || bs != (dbusapi.BootStatus{State: "steady", BootedVersion: "1.0.0", Slot: "USR-A"}) {
		t.Fatalf("boot status %+v, %v", bs, err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit status %d\n%s", code, stderr.String())
	}
	done <- 0
	rec, err := updated.LoadRecord(filepath.Join(dir, "state", updated.StateFile))
	if err != nil || rec.State != updated.UpdatedNeedReboot || rec.Attempt.TargetSlot != "USR-B" {
		t.Fatalf("state file: %s %+v %v", rec.State, rec.Attempt, err)
	}
	if !strings.Contains(stderr.String(), "the new slot boots next") {
		t.Fatalf("log lacks the install:\n%s", stderr.String())
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--bogus"}, 2, "updated run: flag provided but not defined: -bogus\nRun 'updated --help' for usage."},
		{"argument", []string{"extra"}, 2, `unknown command "extra"`},
		{"argument after run", []string{"run", "extra"}, 2, "too many arguments: extra"},
		{"bad log level", []string{"--log-level=loud"}, 2, "--log-level"},
		{"negative first check", []string{"--first-check=-1s"}, 2, "must not be negative"},
		{"negative interval", []string{"run", "-check-interval=-1m"}, 2, "must not be negative"},
		{"help", []string{"--help"}, 0, "-check-interval DURATION"},
		{"run help", []string{"run", "--help"}, 0, "later file winning key by key"},
		{"commands", []string{"help"}, 0, "run  run the update agent until stopped"},
		{"no machine-id", []string{"--root", t.TempDir(), "--bus", "none"}, 1, "machine-id"},
		{"no machine-id, run after flags", []string{"run", "--bus", "none", "--root", t.TempDir()}, 1, "machine-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := updatedcmd.Run(t.Context(), tc.args, nil, cli.IO{Stdout: &out, Stderr: &out}); code != tc.code || !strings.Contains(out.String(), tc.want) {
				t.Errorf("updated %q: exit %d, want %d with %q:\n%s", tc.args, code, tc.code, tc.want, out.String())
			}
		})
	}
}

// TestDaemonESP runs the daemon without D-Bus: --first-check makes it check at once (no
// AttemptUpdate), and --esp points at a directory with the kernel-per-slot layout, where the
// new slot's kernel and initrd must be when the update is installed.
func TestDaemonESP(t *testing.T) {
	ctx := t.Context()
	kernel, initrd := []byte("kernel 2.0.0\n"), bytes.Repeat([]byte("initrd 2.0.0\n"), 1000)
	f := newFixture(t, testimages.UsrOptions{Kernel: []byte("kernel 1.0.0\n"), Initrd: []byte("initrd 1.0.0\n")},
		testimages.UsrOptions{Kernel: kernel, Initrd: initrd})
	dir, disk, root, etc, conf := f.dir, f.disk, f.root, f.etc, f.conf
	espDir := filepath.Join(dir, "boot")
	os.MkdirAll(filepath.Join(espDir, "twinslot"), 0o755)
	os.WriteFile(filepath.Join(espDir, "twinslot", "vmlinuz-a"), []byte("kernel 1.0.0\n"), 0o644)

	var stderr omahatest.SyncBuffer
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() {
		done <- updatedcmd.Run(dctx, []string{"--root", root, "--disk", disk, "--state-dir", filepath.Join(dir, "state"),
			"--etc", etc, "--config", conf, "--bus", "none", "--tpm", "none", "--log-stderr",
			"--esp", espDir, "--first-check", "1ms", "--check-interval", "1h"}, nil, cli.IO{Stdout: &stderr, Stderr: &stderr})
	}()
	defer func() {
		cancel()
		<-done
	}()
	stateFile := filepath.Join(dir, "state", updated.StateFile)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if rec, err := updated.LoadRecord(stateFile); err == nil && rec.State == updated.UpdatedNeedReboot {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not installed within 2 minutes:\n%s", stderr.String())
		}
	}
	for name, want := range map[string][]byte{"vmlinuz-b": kernel, "initrd-b": initrd, "vmlinuz-a": []byte("kernel 1.0.0\n")} {
		if got, err := os.ReadFile(filepath.Join(espDir, "twinslot", name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("ESP %s: %q, %v", name, got, err)
		}
	}
}

func TestSchedule(t *testing.T) {
	def := updated.DefaultSchedule()
	if s := updatedcmd.Schedule(0, 0); s != def {
		t.Fatalf("Schedule(0, 0) = %+v, want the default", s)
	}
	s := updatedcmd.Schedule(7*time.Second, 45*time.Second)
	want := def
	want.First, want.FirstFuzz, want.Period, want.PeriodFuzz = 7*time.Second, 10*time.Second, 45*time.Second, 10*time.Second
	if s != want {
		t.Fatalf("Schedule(7s, 45s) = %+v, want %+v", s, want)
	}
}
