package qemuboot

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/testimages/bootinit"
)

func TestMachineArgs(t *testing.T) {
	m := Machine{QEMU: "qemu-system-x86_64", Kernel: "/boot/vmlinuz", Initrd: "/tmp/initrd"}
	args := m.Args("/tmp/disk.img")
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-nographic", "-no-reboot", "-nic none", "-m 256", "-accel tcg", "-kernel /boot/vmlinuz", "-initrd /tmp/initrd",
		"-drive file=/tmp/disk.img,format=raw,if=virtio",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q: %s", want, joined)
		}
	}
	if i := slices.Index(args, "-append"); i < 0 || args[i+1] != "console=ttyS0 panic=-1 quiet" {
		t.Errorf("kernel command line: %v", args)
	}
	m.KVM, m.MemoryMiB = true, 512
	if joined := strings.Join(m.Args("d"), " "); !strings.Contains(joined, "-accel kvm") || !strings.Contains(joined, "-m 512") {
		t.Errorf("KVM/memory not applied: %s", joined)
	}
}

// fakeQEMU writes a shell script standing in for qemu-system-x86_64.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh for the fake QEMU")
	}
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMachineBoot(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	line := bootinit.Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true}.Line()
	tests := []struct {
		name    string
		script  string
		disk    string
		want    string // in the error; "" for success
		console string // in the console kept
	}{
		{name: "disk missing", script: "exit 0", disk: "/nonexistent/disk.img", want: "no such file"},
		{name: "qemu fails", script: "echo 'qemu: could not open kernel' >&2; exit 1", want: "exit status 1", console: "could not open kernel"},
		{name: "no result line", script: "echo 'Kernel panic - not syncing'", want: bootinit.ErrNoResult.Error(), console: "Kernel panic"},
		{name: "no power-off in time", script: "echo booting; exec sleep 30", want: "no power-off within", console: "booting"},
		{name: "boots", script: "printf 'SeaBIOS\\r\\n%s\\r\\n' '" + line + "'", console: "SeaBIOS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := Machine{QEMU: fakeQEMU(t, tt.script), Kernel: "k", Initrd: "i", Timeout: 500 * time.Millisecond}
			d := tt.disk
			if d == "" {
				d = disk
			}
			b, err := m.Boot(t.Context(), d)
			if !strings.Contains(string(b.Console), tt.console) {
				t.Errorf("console %q lacks %q", b.Console, tt.console)
			}
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil || b.Result.Slot != "USR-B" || !b.Result.Committed || b.Elapsed <= 0 {
				t.Fatalf("boot %+v, %v", b.Result, err)
			}
		})
	}
}

func TestMachineBootNoResultIsSentinel(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(disk, nil, 0o644)
	_, err := Machine{QEMU: fakeQEMU(t, "exit 0")}.Boot(t.Context(), disk)
	if !errors.Is(err, bootinit.ErrNoResult) {
		t.Fatalf("err = %v, want ErrNoResult", err)
	}
}
