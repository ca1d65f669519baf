package testimages

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/twinslot/twinslot/partition"
)

// TestFailGPTWrite: the emulated failures leave the disk as partition's failed writes do and
// say so with partition's error.
func TestFailGPTWrite(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := BuildDisk(t.Context(), disk, DiskOptions{Version: "1.0.0", Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	d, err := partition.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := d.SlotByLabel("USR-B")
	if err != nil {
		t.Fatal(err)
	}

	before, _ := os.ReadFile(disk)
	ran := false
	err = FailGPTWrite(d, false, func() error { ran = true; return d.PrepareInstall(b) })
	var we *partition.WriteError
	if !errors.As(err, &we) || !errors.Is(err, syscall.EIO) || errors.Is(err, partition.ErrWriteApplied) || ran || we.Next.Label != "USR-A" {
		t.Fatalf("not applied: ran %v, err %v", ran, err)
	}
	if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
		t.Fatal("not applied: the disk changed")
	}

	err = FailGPTWrite(d, true, func() error { return d.PrepareInstall(b) })
	if !errors.As(err, &we) || !errors.Is(err, syscall.EIO) || !errors.Is(err, partition.ErrWriteApplied) || we.Next.Label != "USR-B" {
		t.Fatalf("applied: err %v", err)
	}
	h, err := d.Health()
	if err != nil || h.PrimaryErr == nil || h.BackupErr != nil {
		t.Fatalf("applied: health %+v, %v; want the primary damaged, the backup valid", h, err)
	}
	if next, _ := d.SlotByLabel("USR-B"); next.Attr.Tries() != 1 || next.Attr.Priority() != 2 {
		t.Fatalf("applied: USR-B %v, want the new table (P=2 T=1)", next.Attr)
	}
	if repaired, err := d.Repair(); !repaired || err != nil {
		t.Fatalf("Repair = %v, %v", repaired, err)
	}
	if h, err := d.Health(); err != nil || !h.InSync {
		t.Fatalf("after Repair: %+v, %v", h, err)
	}
}
