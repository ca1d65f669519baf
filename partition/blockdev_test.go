package partition

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestBlockDevice runs an install and a boot on a loop block device over an image: the size
// and sector size come from the device, writes go through it to the image.
func TestBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to attach a loop device")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skip("losetup not installed")
	}
	path := freshImage(t)
	out, err := exec.CommandContext(t.Context(), losetup, "--find", "--show", path).CombinedOutput()
	if err != nil {
		t.Skipf("cannot attach a loop device here: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })

	d := openT(t, dev)
	if d.Size() != 8<<20 || d.SectorSize() != 512 {
		t.Fatalf("device size %d sector %d", d.Size(), d.SectorSize())
	}
	b, err := d.SlotByLabel("USR-B")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PrepareInstall(b); err != nil {
		t.Fatal(err)
	}
	if s, err := d.NextBoot(); err != nil || s.Number != 4 {
		t.Fatalf("NextBoot %v %v", s, err)
	}
	d.Close()
	img := openT(t, path, ReadOnly())
	if s := slotsT(t, img); s[1].Attr != attr(2, 0, false)|1<<57 {
		t.Fatalf("image behind the device: B %v", s[1].Attr)
	}
}
