package esp_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/esp"
	"github.com/twinslot/twinslot/testimages"
)

// TestInstallDisk: a target slot that could already boot (PrepareInstall ran before a crash)
// is made unbootable before its files are replaced; a slot without a kernel is refused.
func TestInstallDisk(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := testimages.BuildDisk(t.Context(), disk, testimages.DiskOptions{Version: "1.0.0", Size: testimages.MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	kernel, initrd := []byte("kernel 1.0.1"), []byte("initrd 1.0.1")
	for _, tc := range []struct {
		name           string
		kernel, initrd []byte
		want           error
	}{
		{"no kernel", nil, nil, esp.ErrNoKernel},
		{"kernel", kernel, initrd, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			usr := filepath.Join(dir, tc.name+".img")
			o := testimages.UsrOptions{Version: "1.0.1", Size: testimages.SlotSize(testimages.MinDiskSize), Kernel: tc.kernel, Initrd: tc.initrd}
			if err := testimages.BuildUsr(t.Context(), usr, o); err != nil {
				t.Fatal(err)
			}
			if _, err := testimages.InstallRaw(disk, usr); err != nil {
				t.Fatal(err)
			}
			boot := filepath.Join(dir, "boot-"+tc.name)
			os.MkdirAll(filepath.Join(boot, esp.Subdir), 0o755)
			d, err := partition.Open(disk)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			b, _ := d.SlotByLabel("USR-B")
			if b.Attr.Priority() != 2 {
				t.Fatalf("USR-B %v after InstallRaw", b.Attr)
			}
			err = esp.InstallDisk(t.Context(), boot, d, b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if b, _ = d.SlotByLabel("USR-B"); b.Attr.Priority() != 0 {
				t.Fatalf("USR-B %v: still bootable while its kernel was replaced", b.Attr)
			}
			if a, _ := d.SlotByLabel("USR-A"); !a.Attr.Successful() || a.Attr.Priority() == 0 {
				t.Fatalf("USR-A %v", a.Attr)
			}
			if tc.want != nil {
				return
			}
			for n, want := range map[string][]byte{"vmlinuz-b": kernel, "initrd-b": initrd} {
				if got, err := os.ReadFile(filepath.Join(boot, esp.Subdir, n)); err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s = %q, %v", n, got, err)
				}
			}
		})
	}
}
