package qemuboot

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/bootinit"
)

// newMachine prepares a Machine for the E2E test, or skips with the reason it cannot run.
func newMachine(t *testing.T) Machine {
	t.Helper()
	if os.Getenv("TWINSLOT_E2E") == "" {
		t.Skip("TWINSLOT_E2E not set: the real boot under QEMU runs with make e2e")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86, or make e2e as root)")
	}
	k, err := FindKernel("/", os.Getenv("TWINSLOT_KERNEL"))
	if err != nil {
		t.Skip(err.Error())
	}
	mods, err := KernelModules(k)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
	}
	if k.Modules == "" {
		t.Logf("kernel %s has no module directory: assuming virtio and ext4 are built in", k.Path)
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	if err := BuildInit(t.Context(), "", initBin); err != nil {
		t.Fatal(err)
	}
	init, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var initrd bytes.Buffer
	if err := WriteInitramfs(&initrd, init, mods); err != nil {
		t.Fatal(err)
	}
	m := Machine{QEMU: qemu, Kernel: k.Path, Initrd: filepath.Join(dir, "initrd.cpio"), Console: newSerialLog(t.Output())}
	if err := os.WriteFile(m.Initrd, initrd.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Software emulation unless asked: an openable /dev/kvm is no promise that KVM works (nested
	// virtualisation here fails with "KVM internal error" and QEMU then hangs).
	m.KVM = os.Getenv("TWINSLOT_E2E_KVM") == "1"
	t.Logf("kernel %s (%s), modules packed: %v, initramfs %d KiB, accel kvm=%v", k.Path, k.Release, names, initrd.Len()>>10, m.KVM)
	return m
}

// TestE2EQEMUBoot boots a test disk for real, three times over: a fresh disk, a good update
// that gets committed, and a broken update that falls back. Each boot is checked from the
// init's result line and from the GPT read on the host afterwards.
func TestE2EQEMUBoot(t *testing.T) {
	m := newMachine(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := testimages.BuildDisk(t.Context(), disk, testimages.DiskOptions{Version: "1.0.0", Size: testimages.MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	slotSize := testimages.SlotSize(testimages.MinDiskSize)
	install := func(version string, broken bool, wantSlot string) {
		t.Helper()
		usr := filepath.Join(dir, "usr-"+version+".img")
		if err := testimages.BuildUsr(t.Context(), usr, testimages.UsrOptions{Version: version, Size: slotSize, Broken: broken}); err != nil {
			t.Fatal(err)
		}
		s, err := testimages.InstallRaw(disk, usr)
		if err != nil {
			t.Fatal(err)
		}
		if s.Label != wantSlot || s.Attr != attr(2, 1, false) {
			t.Fatalf("install %s went to %s %v, want %s P=2 T=1 S=0", version, s.Label, s.Attr, wantSlot)
		}
	}
	boots := 0
	boot := func(want bootinit.Result) {
		t.Helper()
		boots++
		b, err := m.Boot(t.Context(), disk)
		if err != nil {
			t.Fatalf("boot %d: %v\nconsole:\n%s", boots, err, b.Console)
		}
		t.Logf("boot %d: %s %s healthy=%v committed=%v in %s (kernel uptime at power-off %.1fs)",
			boots, b.Result.Slot, b.Result.Version, b.Result.Healthy, b.Result.Committed, b.Elapsed.Round(100*time.Millisecond), b.Result.Uptime)
		got := b.Result
		got.PartUUID, got.Health, got.Uptime = "", "", 0
		if got != want {
			t.Fatalf("boot %d result\n got %+v\nwant %+v\nconsole:\n%s", boots, got, want, b.Console)
		}
	}
	gpt := func(wantA, wantB partition.Attributes) {
		t.Helper()
		d, err := partition.Open(disk, partition.ReadOnly())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		slots, err := d.Slots()
		if err != nil {
			t.Fatal(err)
		}
		if len(slots) != 2 || slots[0].Attr != wantA || slots[1].Attr != wantB {
			t.Fatalf("after boot %d: GPT on the host has %v, want USR-A %v USR-B %v", boots, slots, wantA, wantB)
		}
		if h, err := d.Health(); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("after boot %d: USR-A %v, USR-B %v; GPT %+v", boots, wantA, wantB, h)
		}
	}
	a, b := "USR-A", "USR-B"
	res := func(slot string, p, n int, s bool, version string, healthy bool) bootinit.Result {
		r := bootinit.Result{Slot: slot, Partition: 3, Priority: p, Tries: n, Successful: s, Version: version, Healthy: healthy, Committed: healthy, MarkedBad: !healthy}
		if slot == b {
			r.Partition = 4
		}
		return r
	}

	// 1. A fresh disk boots 1.0.0 from USR-A and commits it (already successful).
	boot(res(a, 1, 0, true, "1.0.0", true))
	gpt(attr(1, 0, true), attr(0, 0, false))

	// 2. A good 1.0.1 in USR-B: tried once (tries 1 → 0 on disk), healthy, committed; stays.
	install("1.0.1", false, b)
	boot(res(b, 2, 0, false, "1.0.1", true))
	gpt(attr(1, 0, true), attr(2, 0, true))
	boot(res(b, 2, 0, true, "1.0.1", true))
	gpt(attr(1, 0, true), attr(2, 0, true))

	// 3. A broken 1.0.2 in USR-A: tried once, the health gate fails, it is marked bad, and the
	// next boot falls back to 1.0.1 in USR-B.
	install("1.0.2", true, a)
	boot(res(a, 2, 0, false, "1.0.2", false))
	gpt(attr(0, 0, false), attr(1, 0, true))
	boot(res(b, 1, 0, true, "1.0.1", true))
	gpt(attr(0, 0, false), attr(1, 0, true))
}

func attr(p, n int, ok bool) partition.Attributes {
	return partition.Attributes(0).WithPriority(p).WithTries(n).WithSuccessful(ok)
}

// serialLog writes the guest's console to the test log a line at a time, prefixed, without
// SeaBIOS's terminal escape sequences and carriage returns.
type serialLog struct {
	w       io.Writer
	escapes *regexp.Regexp
	partial []byte
}

func newSerialLog(w io.Writer) *serialLog {
	return &serialLog{w: w, escapes: regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])|\r`)}
}

func (s *serialLog) Write(p []byte) (int, error) {
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		if line := s.escapes.ReplaceAll(s.partial[:i], nil); len(bytes.TrimSpace(line)) > 0 {
			s.w.Write(append(append([]byte("serial| "), line...), '\n'))
		}
		s.partial = s.partial[i+1:]
	}
}
