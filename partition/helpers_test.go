package partition

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	guidA    = "7130C94A-213A-4E5A-8E26-6CCE9662F132" // Flatcar's USR-A
	guidB    = "E03DD35C-7C2D-4A47-B3FE-27F15780A57C" // Flatcar's USR-B
	diskGUID = "00000000-0000-4000-8000-000000000001"
)

// testLayout is a small Flatcar-like disk: 1 EFI, 3 USR-A, 4 USR-B, 9 ROOT (gaps at 2 and
// 5–8), with attribute bits outside gptprio set on several entries so that tests see
// whether they survive. Sizes are in MiB-ish units scaled by unit bytes.
func testLayout(ss int, unit uint64, usrA, usrB Attributes) []*gpt.Partition {
	lba := func(bytes uint64) uint64 { return bytes / uint64(ss) }
	return []*gpt.Partition{
		{Index: 1, Start: lba(1 * unit), Size: 1 * unit, Type: gpt.EFISystemPartition, Name: "EFI-SYSTEM", GUID: "11111111-1111-4111-8111-111111111111", Attributes: 1 << 0},
		{Index: 3, Start: lba(2 * unit), Size: 2 * unit, Type: gpt.Type(TypeUSR), Name: "USR-A", GUID: guidA, Attributes: uint64(usrA)},
		{Index: 4, Start: lba(4 * unit), Size: 2 * unit, Type: gpt.Type(TypeUSR), Name: "USR-B", GUID: guidB, Attributes: uint64(usrB)},
		{Index: 9, Start: lba(6 * unit), Size: 1 * unit, Type: gpt.Type("3884DD41-8582-4404-B9A8-E9B84F2DF50E"), Name: "ROOT", GUID: "99999999-9999-4999-8999-999999999999", Attributes: 1<<2 | 1<<63},
	}
}

// writeImage creates a disk image of size bytes holding parts.
func writeImage(t testing.TB, path string, size int64, ss int, parts []*gpt.Partition) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	tbl := &gpt.Table{LogicalSectorSize: ss, PhysicalSectorSize: ss, ProtectiveMBR: true, GUID: diskGUID, Partitions: parts}
	if err := tbl.Write(f, size); err != nil {
		t.Fatal(err)
	}
}

// freshImage is an 8 MiB, 512-byte-sector disk: A = P1 S1 (and bit 60), B = P0 (and bit 57).
func freshImage(t testing.TB) string {
	return imageWith(t, attr(1, 0, true)|1<<60, 1<<57)
}

func imageWith(t testing.TB, a, b Attributes) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, path, 8<<20, 512, testLayout(512, 1<<20, a, b))
	return path
}

func openT(t testing.TB, path string, opts ...Option) *Disk {
	t.Helper()
	d, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func slotsT(t testing.TB, d *Disk) []Slot {
	t.Helper()
	s, err := d.Slots()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fileHash(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// patch overwrites bytes of the file at off.
func patch(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// changedRanges lists [start,end) byte ranges where a and b differ.
func changedRanges(a, b []byte) [][2]int {
	var r [][2]int
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			if n := len(r); n > 0 && r[n-1][1] == i {
				r[n-1][1] = i + 1
			} else {
				r = append(r, [2]int{i, i + 1})
			}
		}
	}
	if !bytes.Equal(a[min(len(a), len(b)):], b[min(len(a), len(b)):]) || len(a) != len(b) {
		r = append(r, [2]int{min(len(a), len(b)), max(len(a), len(b))})
	}
	return r
}

// fixCRCs copies the primary entry array of a raw 128-entry image over the backup array and
// recomputes both headers' CRCs, as a tool that rewrote the table would.
func fixCRCs(raw []byte, ss int) {
	last := len(raw)/ss - 1
	arr := raw[2*ss : 2*ss+128*128]
	copy(raw[(last-128*128/ss)*ss:], arr)
	crc := crc32.ChecksumIEEE(arr)
	for _, h := range []int{ss, last * ss} {
		binary.LittleEndian.PutUint32(raw[h+88:], crc)
		clear(raw[h+16 : h+20])
		binary.LittleEndian.PutUint32(raw[h+16:], crc32.ChecksumIEEE(raw[h:h+92]))
	}
}

// onlyAttributesChanged fails unless every byte that differs between the images lies in the
// attribute word of one of the given partitions (in either 128-entry array) or in a header CRC.
func onlyAttributesChanged(t testing.TB, before, after []byte, ss int, numbers ...int) {
	t.Helper()
	last := len(before)/ss - 1
	allowed := [][2]int{
		{ss + 16, ss + 20}, {ss + 88, ss + 92}, // primary header CRCs
		{last*ss + 16, last*ss + 20}, {last*ss + 88, last*ss + 92}, // backup header CRCs
	}
	for _, arr := range []int{2 * ss, (last - 128*128/ss) * ss} {
		for _, n := range numbers {
			off := arr + (n-1)*128 + 48
			allowed = append(allowed, [2]int{off, off + 8})
		}
	}
	changed := changedRanges(before, after)
	if len(changed) == 0 {
		t.Fatal("nothing changed")
	}
	for _, r := range changed {
		ok := false
		for _, a := range allowed {
			ok = ok || (r[0] >= a[0] && r[1] <= a[1])
		}
		if !ok {
			t.Errorf("bytes %d..%d changed outside the attributes of %v and the CRCs", r[0], r[1], numbers)
		}
	}
}

// setHeaderField sets the 64-bit field at off of the GPT header at byte hdr of raw and
// recomputes the header CRC, as a tool that laid the table out differently would.
func setHeaderField(raw []byte, hdr, off int, v uint64) {
	binary.LittleEndian.PutUint64(raw[hdr+off:], v)
	clear(raw[hdr+16 : hdr+20])
	binary.LittleEndian.PutUint32(raw[hdr+16:], crc32.ChecksumIEEE(raw[hdr:hdr+92]))
}
