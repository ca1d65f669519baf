package uefivm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/testimages/tailbuf"
)

func TestForwardCheck(t *testing.T) {
	for _, tc := range []struct {
		f  Forward
		ok bool
	}{
		{Forward{"10.0.2.100:80", "127.0.0.1:8080"}, true},
		{Forward{"10.0.2.100:80", "127.0.0.2:8080"}, true},
		{Forward{"10.0.2.100:80", "[::1]:8080"}, true},
		{Forward{"10.0.2.100:80", "192.168.1.1:8080"}, false},
		{Forward{"10.0.2.100:80", "example.com:80"}, false},
		{Forward{"10.0.2.100:80", "127.0.0.1"}, false},
		{Forward{"10.0.2.100", "127.0.0.1:8080"}, false},
		{Forward{"guest:80", "127.0.0.1:8080"}, false},
	} {
		if err := tc.f.check(); (err == nil) != tc.ok {
			t.Errorf("%+v: err = %v, want ok=%v", tc.f, err, tc.ok)
		}
	}
}

func TestStartRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "d.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Machine{
		{},
		{Disks: []string{filepath.Join(dir, "missing.img")}},
		{Disks: []string{disk}, Forwards: []Forward{{"10.0.2.100:80", "10.1.1.1:80"}}},
		{Disks: []string{disk}, BlockSizes: []int{1000}},
		{Disks: []string{disk}, BlockSizes: []int{512, 512}},
	} {
		r, err := m.Start(t.Context())
		skipMissing(t, err)
		if err == nil {
			r.Kill()
			t.Fatalf("%+v started", m)
		}
	}
	m := &Machine{Disks: []string{disk}, QEMU: filepath.Join(dir, "no-such-qemu")}
	if _, err := m.Start(t.Context()); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "qemu-system-x86") {
		t.Fatalf("missing QEMU: %v, want a MissingError naming qemu-system-x86", err)
	}
}

func TestArgs(t *testing.T) {
	m := &Machine{Disks: []string{"/d/boot.img", "/d/a,b.img"}, BlockSizes: []int{0, 4096},
		Forwards: []Forward{{"10.0.2.100:80", "127.0.0.1:8080"}, {"10.0.2.101:2379", "127.0.0.1:2379"}}}
	a := m.Args("/v/vars.fd", "/t/swtpm.sock")
	line := strings.Join(a, " ")
	for _, want := range []string{
		"-machine q35", "-accel tcg", "-m 1024", "-smp 1", "-nodefaults", "-nographic", "-no-reboot",
		"if=pflash,format=raw,unit=0,readonly=on,file=" + OVMFCode,
		"if=pflash,format=raw,unit=1,file=/v/vars.fd",
		"if=none,format=raw,id=disk0,file=/d/boot.img", "virtio-blk-pci,drive=disk0,bootindex=0",
		"if=none,format=raw,id=disk1,file=/d/a,,b.img",
		"virtio-blk-pci,drive=disk1,bootindex=1,logical_block_size=4096,physical_block_size=4096",
		"user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:8080,guestfwd=tcp:10.0.2.101:2379-cmd:socat - TCP:127.0.0.1:2379",
		"virtio-net-pci,netdev=net0,romfile=",
		"socket,id=chrtpm,path=/t/swtpm.sock", "emulator,id=tpm0,chardev=chrtpm", "tpm-tis,tpmdev=tpm0",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("args lack %q:\n%s", want, line)
		}
	}
	plain := (&Machine{Disks: []string{"/d/boot.img"}}).Args("/v/vars.fd", "")
	for _, no := range []string{"-netdev", "-tpmdev", "-chardev"} {
		if slices.Contains(plain, no) {
			t.Errorf("a machine without Forwards or TPMState has %s: %v", no, plain)
		}
	}
}

// TestE2EKillWithTPM boots OVMF with a TPM from a disk without an ESP (the firmware keeps
// trying), cuts the power once the firmware printed on the serial console, and checks that
// Wait says so, that swtpm kept state in TPMState, and that the vars file is the caller's.
func TestE2EKillWithTPM(t *testing.T) {
	needE2E(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	console := tailbuf.New(1 << 20)
	m := &Machine{Disks: []string{disk}, MemoryMB: 256, TPMState: filepath.Join(dir, "tpm"),
		VarsFile: filepath.Join(dir, "vars.fd"), Console: console}
	r, err := m.Start(t.Context())
	skipMissing(t, err)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for console.String() == "" {
		select {
		case <-r.Done():
			t.Fatalf("QEMU exited before the kill: %v\n%s", r.Wait(), console)
		case <-t.Context().Done():
			r.Kill()
			t.Fatal("test deadline")
		case <-tick.C:
		}
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(); !errors.Is(err, ErrKilled) {
		t.Fatalf("Wait after Kill = %v, want ErrKilled", err)
	}
	ents, err := os.ReadDir(m.TPMState)
	if err != nil || len(ents) == 0 {
		t.Fatalf("swtpm left no state in %s (%v)", m.TPMState, err)
	}
	if st, err := os.Stat(m.VarsFile); err != nil || st.Size() == 0 {
		t.Fatalf("vars file %s: %v", m.VarsFile, err)
	}
}
