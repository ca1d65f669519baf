package testimages

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/twinslot/twinslot/partition"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.sha256")

func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		size    int64
		slot    int64
		wantErr string
	}{
		{size: 32 * MiB, wantErr: "below the minimum"},
		{size: 512*MiB + 512, wantErr: "multiple of 1 MiB"},
		{size: MinDiskSize, slot: 21 * MiB},
		{size: DefaultDiskSize, slot: DefaultUsrSize},
		{size: 6 * GiB, slot: 2 * GiB},
		{size: 100 * GiB, slot: 34133 * MiB},
	} {
		parts, err := Layout(tc.size)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%d: err = %v", tc.size, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var nums []int
		next := int64(MiB)
		for _, p := range parts {
			nums = append(nums, p.Number)
			if p.Start != next || p.Size < MiB || p.Start%MiB != 0 || p.Size%MiB != 0 {
				t.Errorf("%d: partition %d at %d size %d", tc.size, p.Number, p.Start, p.Size)
			}
			next = p.Start + p.Size
		}
		if next != tc.size-MiB {
			t.Errorf("%d: layout ends at %d", tc.size, next)
		}
		if parts[2].Size != tc.slot || parts[3].Size != tc.slot || SlotSize(tc.size) != tc.slot {
			t.Errorf("%d: slots %d/%d, want %d", tc.size, parts[2].Size, parts[3].Size, tc.slot)
		}
		if fmt.Sprint(nums) != "[1 2 3 4 5 6 7 9]" {
			t.Errorf("%d: partition numbers %v", tc.size, nums)
		}
	}
}

// diskUsage is the number of bytes a (sparse) file occupies.
func diskUsage(t testing.TB, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestBuildDisk(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := BuildDisk(t.Context(), disk, DiskOptions{Version: "1.0.0", Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	d, err := partition.Open(disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	slots, err := d.Slots()
	if err != nil || len(slots) != 2 {
		t.Fatalf("slots %v %v", slots, err)
	}
	a, b := slots[0], slots[1]
	if a.Label != "USR-A" || a.Number != 3 || a.PartUUID != strings.ToLower(GUIDUsrA) || a.Attr != 0x0101000000000000 ||
		b.Label != "USR-B" || b.Number != 4 || b.PartUUID != strings.ToLower(GUIDUsrB) || b.Attr != 0 {
		t.Fatalf("slots %+v", slots)
	}
	// USR-A holds exactly what BuildUsr makes for that slot size.
	usr := filepath.Join(dir, "usr.img")
	buildUsrT(t, usr, UsrOptions{Version: "1.0.0", Size: a.Size})
	want, err := os.ReadFile(usr)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.SlotReader(a))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("USR-A differs from BuildUsr's image (%v)", err)
	}
	rel, err := ReadRelease(d.SlotReader(a), a.Size)
	if err != nil || rel.Version != "1.0.0" {
		t.Fatalf("release %+v %v", rel, err)
	}
	if _, err := ReadRelease(d.SlotReader(b), b.Size); !errors.Is(err, ErrNoRelease) {
		t.Fatalf("empty USR-B: %v", err)
	}
	// Reproducible, and the same with the image given as Usr.
	again := filepath.Join(dir, "again.img")
	if err := BuildDisk(t.Context(), again, DiskOptions{Version: "1.0.0", Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	fromUsr := filepath.Join(dir, "from-usr.img")
	if err := BuildDisk(t.Context(), fromUsr, DiskOptions{Usr: usr, Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	if h := hashFile(t, disk); hashFile(t, again) != h || hashFile(t, fromUsr) != h {
		t.Fatal("disk images differ")
	}
	if sgdisk, err := exec.LookPath("sgdisk"); err == nil {
		out, err := exec.CommandContext(t.Context(), sgdisk, "-v", disk).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("sgdisk -v: %v\n%s", err, out)
		}
	}
}

// TestBigSparseDisk: a 6 GiB disk with 2 GiB slots, built from a small /usr image, stays
// sparse on disk.
func TestBigSparseDisk(t *testing.T) {
	dir := t.TempDir()
	usr := filepath.Join(dir, "usr.img")
	buildUsrT(t, usr, UsrOptions{Version: "1.0.0", Size: MinUsrSize})
	disk := filepath.Join(dir, "big.img")
	if err := BuildDisk(t.Context(), disk, DiskOptions{Usr: usr, Size: 6 * GiB}); err != nil {
		t.Fatal(err)
	}
	d, err := partition.Open(disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := d.SlotByLabel("USR-B")
	if err != nil || b.Size != 2*GiB {
		t.Fatalf("USR-B %+v %v", b, err)
	}
	if used := diskUsage(t, disk); used > 64*MiB {
		t.Fatalf("6 GiB image uses %d bytes on disk", used)
	}
}

func TestBuildDiskErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.img")
	buildUsrT(t, big, UsrOptions{Version: "1.0.0", Size: 32 * MiB})
	zeros := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(zeros, make([]byte, MinUsrSize), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    DiskOptions
		want error
		msg  string
	}{
		{name: "no version", o: DiskOptions{}, msg: "version is empty"},
		{name: "too small", o: DiskOptions{Version: "1", Size: 16 * MiB}, msg: "below the minimum"},
		{name: "usr does not fit", o: DiskOptions{Usr: big, Size: MinDiskSize}, want: partition.ErrSlotTooSmall},
		{name: "usr is not an image", o: DiskOptions{Usr: zeros, Size: MinDiskSize}, want: ErrNoRelease},
	} {
		out := filepath.Join(dir, "out.img")
		err := BuildDisk(t.Context(), out, tc.o)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: output left behind", tc.name)
		}
	}
}

func TestInstallRawRefusals(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := BuildDisk(t.Context(), disk, DiskOptions{Version: "1.0.0", Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.img")
	buildUsrT(t, big, UsrOptions{Version: "1.0.1", Size: 32 * MiB})
	zeros := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(zeros, make([]byte, MinUsrSize), 0o644); err != nil {
		t.Fatal(err)
	}
	before := hashFile(t, disk)
	for _, tc := range []struct {
		name, img string
		want      error
	}{
		{"too big", big, partition.ErrSlotTooSmall},
		{"not an image", zeros, ErrNoRelease},
		{"missing", filepath.Join(dir, "nope"), os.ErrNotExist},
	} {
		if _, err := InstallRaw(disk, tc.img); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := InstallRaw(zeros, zeros); !errors.Is(err, partition.ErrNotGPT) {
		t.Errorf("install into a non-disk: %v", err)
	}
	if hashFile(t, disk) != before {
		t.Fatal("refused installs changed the disk")
	}
}
