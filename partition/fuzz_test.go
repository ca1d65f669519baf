package partition

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

var update = flag.Bool("update", false, "rewrite the seed images in testdata/")

// memDev is an in-memory disk.
type memDev []byte

func (m memDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write outside the disk")
	}
	return copy(m[off:], p), nil
}

// seedLayout is a 64 KiB disk: the smallest Flatcar-like table used as fuzz seeds.
func seedLayout(a, b Attributes) []*gpt.Partition {
	return []*gpt.Partition{
		{Index: 1, Start: 34, End: 39, Type: gpt.EFISystemPartition, Name: "EFI-SYSTEM", GUID: "11111111-1111-4111-8111-111111111111", Attributes: 1},
		{Index: 3, Start: 40, End: 55, Type: gpt.Type(TypeUSR), Name: "USR-A", GUID: guidA, Attributes: uint64(a)},
		{Index: 4, Start: 56, End: 71, Type: gpt.Type(TypeUSR), Name: "USR-B", GUID: guidB, Attributes: uint64(b)},
		{Index: 9, Start: 72, End: 90, Type: gpt.Type("3884DD41-8582-4404-B9A8-E9B84F2DF50E"), Name: "ROOT", GUID: "99999999-9999-4999-8999-999999999999", Attributes: 1 << 63},
	}
}

// TestSeeds checks the committed seed images and, with -update, rewrites them
// (see testdata/README.md).
func TestSeeds(t *testing.T) {
	const size = 64 << 10
	seeds := map[string]func(path string){
		"fresh.img":     func(p string) { writeImage(t, p, size, 512, seedLayout(attr(1, 0, true)|1<<60, 0)) },
		"installed.img": func(p string) { writeImage(t, p, size, 512, seedLayout(attr(1, 0, true), attr(2, 1, false))) },
		"primary-damaged.img": func(p string) {
			writeImage(t, p, size, 512, seedLayout(attr(1, 0, true), attr(2, 0, true)))
			patch(t, p, 512+24, []byte{7}) // MyLBA, header CRC now wrong
		},
		"three-slots.img": func(p string) {
			l := seedLayout(attr(1, 0, true), attr(3, 2, false))
			l[3].Type = gpt.Type(TypeUSR)
			l[3].Attributes = uint64(attr(3, 0, true))
			writeImage(t, p, size, 512, l)
		},
	}
	if *update {
		for name, make := range seeds {
			p := filepath.Join("testdata", name)
			os.Remove(p)
			make(p)
		}
		if sgdisk, err := exec.LookPath("sgdisk"); err == nil {
			p := filepath.Join("testdata", "sgdisk.img")
			if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), sgdisk, "-a", "1", "-U", diskGUID,
				"-n", "3:34:49", "-t", "3:"+TypeUSR, "-c", "3:USR-A", "-u", "3:"+guidA, "-A", "3:set:48", "-A", "3:set:56",
				"-n", "4:50:65", "-t", "4:"+TypeUSR, "-c", "4:USR-B", "-u", "4:"+guidB, p).CombinedOutput()
			if err != nil {
				t.Fatalf("sgdisk: %v\n%s", err, out)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		slots int
		next  int
	}{
		{"fresh.img", 2, 3}, {"installed.img", 2, 4}, {"primary-damaged.img", 2, 4}, {"three-slots.img", 3, 4}, {"sgdisk.img", 2, 3},
	} {
		b := readFile(t, filepath.Join("testdata", tc.name))
		tbl, err := readTable(memDev(b), int64(len(b)), 512)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		next, _, err := Next(tbl.slots)
		if len(tbl.slots) != tc.slots || err != nil || next.Number != tc.next {
			t.Errorf("%s: %d slots, next %v %v", tc.name, len(tbl.slots), next, err)
		}
	}
}

// FuzzGPT feeds arbitrary disks to the table reader, and for each readable one applies an
// install and a boot and checks the result reads back exactly, from a valid primary, in sync.
func FuzzGPT(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.img"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add(make([]byte, 4096), false)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if len(b) > 1<<20 {
			return
		}
		if fixCRC && len(b) >= 64<<10 && len(b)%512 == 0 {
			// Let mutations of header fields and entries get past the CRC checks.
			fixCRCs(b, 512)
		}
		dev := memDev(slices.Clone(b))
		tbl, err := readTable(dev, int64(len(dev)), 512)
		if err != nil {
			if !slices.Equal(dev, b) {
				t.Fatal("a failed read changed the disk")
			}
			return
		}
		for _, s := range tbl.slots {
			if s.Start < 0 || s.Size <= 0 || s.Start+s.Size > int64(len(b)) {
				t.Fatalf("slot %v outside the %d-byte disk", s, len(b))
			}
		}
		if len(tbl.slots) == 0 {
			return
		}
		planned, err := PlanInstall(tbl.slots, tbl.slots[len(tbl.slots)-1].Number)
		if err != nil {
			t.Fatal(err)
		}
		_, planned, err = Next(planned)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := tbl.plan(planned, false)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedTable) {
				t.Fatalf("plan: %v", err)
			}
			return
		}
		for _, w := range ws {
			if _, err := dev.WriteAt(w.data, w.off); err != nil {
				t.Fatal(err)
			}
		}
		again, err := readTable(dev, int64(len(dev)), 512)
		if err != nil {
			t.Fatalf("re-read after write: %v", err)
		}
		if fmt.Sprint(again.slots) != fmt.Sprint(planned) || again.fromBackup() || !again.inSync() {
			t.Fatalf("re-read %v (backup %v, in sync %v), wrote %v", again.slots, again.fromBackup(), again.inSync(), planned)
		}
	})
}
