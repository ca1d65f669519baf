package uefivm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needE2E skips heavy tests (a QEMU boot) unless TWINSLOT_E2E is set (make e2e).
func needE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped with -short")
	}
	if os.Getenv("TWINSLOT_E2E") == "" {
		t.Skip("boots QEMU (tens of seconds without KVM); set TWINSLOT_E2E=1 or run make e2e / make grub-test")
	}
}

// skipMissing skips the test when err says a tool is not installed.
func skipMissing(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrMissing) {
		t.Skip(err)
	}
}

func TestWriteFATRejects(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a.txt")
	if err := os.WriteFile(src, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		size  int64
		files map[string]string
	}{
		{"too small", 4096, map[string]string{"a": src}},
		{"not whole sectors", MinFATSize + 1, map[string]string{"a": src}},
		{"escaping destination", MinFATSize, map[string]string{"../a": src}},
		{"unclean destination", MinFATSize, map[string]string{"EFI//a": src}},
		{"missing source", MinFATSize, map[string]string{"a": filepath.Join(dir, "nope")}},
		{"directory source", MinFATSize, map[string]string{"a": dir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "fat.img")
			err := WriteFAT(t.Context(), out, tc.size, tc.files)
			skipMissing(t, err)
			if err == nil {
				t.Fatal("no error")
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Fatalf("%s exists after a failed WriteFAT (%v)", out, err)
			}
		})
	}
}

func TestWriteESPDisk(t *testing.T) {
	dir := t.TempDir()
	efi := filepath.Join(dir, "BOOTX64.EFI")
	cfg := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(efi, []byte("MZ not really an EFI binary"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("echo hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "esp.img")
	err := WriteESPDisk(t.Context(), disk, 8<<20, map[string]string{
		"EFI/BOOT/BOOTX64.EFI": efi, "/EFI/BOOT/grub.cfg": cfg,
	})
	skipMissing(t, err)
	if err != nil {
		t.Fatal(err)
	}
	// mtools reads the partition (-i IMAGE@@OFFSET) and lists what WriteESPDisk put there.
	cmd := exec.Command("mtype", "-i", disk+"@@1M", "::/EFI/BOOT/grub.cfg")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mtype: %v: %s", err, out)
	}
	if string(out) != "echo hello\n" {
		t.Fatalf("grub.cfg on the ESP = %q", out)
	}
	cmd = exec.Command("mdir", "-b", "-i", disk+"@@1M", "::/EFI/BOOT")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err = cmd.CombinedOutput(); err != nil {
		t.Fatalf("mdir: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "BOOTX64.EFI") {
		t.Fatalf("no BOOTX64.EFI on the ESP: %s", out)
	}
	if _, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("sgdisk -v: %v: %s", err, out)
		}
		out, err = exec.Command("sgdisk", "-i", "1", disk).CombinedOutput()
		if err != nil || !strings.Contains(string(out), TypeESP) {
			t.Fatalf("sgdisk -i 1: partition 1 is not an ESP: %v: %s", err, out)
		}
	}
}
