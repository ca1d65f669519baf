package partition

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank.img")
	if err := os.WriteFile(blank, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join(dir, "tiny.img")
	if err := os.WriteFile(tiny, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(dir, "odd.img")
	if err := os.WriteFile(odd, make([]byte, 1<<20+7), 0o644); err != nil {
		t.Fatal(err)
	}
	both := freshImage(t)
	patch(t, both, 512+16, []byte{0xde, 0xad})       // primary header CRC
	patch(t, both, 8<<20-512+16, []byte{0xbe, 0xef}) // backup header CRC
	wrongSS := freshImage(t)
	shrunk := freshImage(t) // written for 8 MiB, cut to 6: the primary's backup is off the disk
	if err := os.Truncate(shrunk, 6<<20); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		path    string
		opts    []Option
		wantErr error
		wantMsg string
	}{
		{name: "missing file", path: filepath.Join(dir, "nope.img"), wantErr: os.ErrNotExist},
		{name: "directory", path: dir, opts: []Option{ReadOnly()}, wantMsg: "not a regular file or block device"},
		{name: "blank disk", path: blank, wantErr: ErrNotGPT, wantMsg: "no GPT header"},
		{name: "tiny file", path: tiny, wantErr: ErrNotGPT},
		{name: "size not a multiple of the sector", path: odd, wantErr: ErrNotGPT},
		{name: "both copies corrupt", path: both, wantErr: ErrBothTablesCorrupt, wantMsg: "header CRC"},
		{name: "disk smaller than the image", path: shrunk, wantErr: ErrBothTablesCorrupt, wantMsg: "outside the disk"},
		{name: "wrong sector size", path: wrongSS, opts: []Option{SectorSize(4096)}, wantErr: ErrNotGPT},
		{name: "bad sector size", path: wrongSS, opts: []Option{SectorSize(1000)}, wantMsg: "sector size 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ""
			if st, err := os.Stat(tc.path); err == nil && st.Mode().IsRegular() {
				before = fileHash(t, tc.path)
			}
			d, err := Open(tc.path, tc.opts...)
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v / %q", err, tc.wantErr, tc.wantMsg)
			}
			if before != "" && fileHash(t, tc.path) != before {
				t.Fatal("failed Open changed the file")
			}
		})
	}
}

func TestNoSlots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, path, 4<<20, 512, testLayout(512, 1<<20, 0, 0)[:1])
	d := openT(t, path)
	if _, err := d.Slots(); !errors.Is(err, ErrNoSlots) {
		t.Fatalf("Slots: %v", err)
	}
	if _, err := d.NextBoot(); !errors.Is(err, ErrNoBootableSlot) {
		t.Fatalf("NextBoot: %v", err)
	}
}

func TestOneSlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	writeImage(t, path, 8<<20, 512, testLayout(512, 1<<20, attr(1, 0, true), 0)[:2])
	d := openT(t, path)
	s := slotsT(t, d)
	if len(s) != 1 {
		t.Fatalf("slots %v", s)
	}
	if _, err := d.Other(s[0]); !errors.Is(err, ErrOneSlot) {
		t.Fatalf("Other: %v", err)
	}
	if _, err := d.Rollback(s[0]); !errors.Is(err, ErrOneSlot) {
		t.Fatalf("Rollback: %v", err)
	}
}

func TestSlots(t *testing.T) {
	d := openT(t, freshImage(t), ReadOnly())
	got := slotsT(t, d)
	want := []Slot{
		{Number: 3, Label: "USR-A", PartUUID: strings.ToLower(guidA), Start: 2 << 20, Size: 2 << 20, Attr: attr(1, 0, true) | 1<<60},
		{Number: 4, Label: "USR-B", PartUUID: strings.ToLower(guidB), Start: 4 << 20, Size: 2 << 20, Attr: 1 << 57},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("slots\n%+v\nwant\n%+v", got, want)
	}
	for _, name := range []string{"USR-B", "4", strings.ToUpper(guidB)} {
		s, err := d.Slot(name)
		if err != nil || s.Number != 4 {
			t.Errorf("Slot(%q) = %v, %v", name, s, err)
		}
	}
	if _, err := d.SlotByLabel("USR-C"); !errors.Is(err, ErrUnknownSlot) {
		t.Errorf("SlotByLabel: %v", err)
	}
	if _, err := d.SlotByNumber(9); !errors.Is(err, ErrUnknownSlot) {
		t.Errorf("SlotByNumber(ROOT): %v", err)
	}
	if s, err := d.SlotByPartUUID(guidA); err != nil || s.Label != "USR-A" {
		t.Errorf("SlotByPartUUID: %v %v", s, err)
	}
	if o, err := d.Other(got[0]); err != nil || o.Number != 4 {
		t.Errorf("Other: %v %v", o, err)
	}
}

// TestLifecycle walks install → one try → fallback → install → commit → rollback on a real
// image, checking the attribute words at each step.
func TestLifecycle(t *testing.T) {
	path := freshImage(t)
	d := openT(t, path)
	a, _ := d.SlotByLabel("USR-A")
	b, _ := d.SlotByLabel("USR-B")
	step := func(name string, f func() (int, error), wantBoot int, wantA, wantB Attributes) {
		t.Helper()
		got, err := f()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != wantBoot {
			t.Fatalf("%s: got slot %d, want %d", name, got, wantBoot)
		}
		s := slotsT(t, d)
		if s[0].Attr != wantA|1<<60 || s[1].Attr != wantB|1<<57 {
			t.Fatalf("%s: A %v B %v, want A %v B %v", name, s[0].Attr, s[1].Attr, wantA|1<<60, wantB|1<<57)
		}
	}
	boot := func() (int, error) { s, err := d.NextBoot(); return s.Number, err }
	do := func(f func(Slot) error, s Slot) func() (int, error) {
		return func() (int, error) { return 0, f(s) }
	}
	step("fresh boot", boot, 3, attr(1, 0, true), 0)
	step("install B", do(d.PrepareInstall, b), 0, attr(1, 0, true), attr(2, 1, false))
	step("boot B, tries 1->0", boot, 4, attr(1, 0, true), attr(2, 0, false))
	step("no mark-good: falls back to A", boot, 3, attr(1, 0, true), attr(2, 0, false))
	step("again A", boot, 3, attr(1, 0, true), attr(2, 0, false))
	step("begin install B", do(d.BeginInstall, b), 0, attr(1, 0, true), 0)
	step("install B again", do(d.PrepareInstall, b), 0, attr(1, 0, true), attr(2, 1, false))
	step("boot B", boot, 4, attr(1, 0, true), attr(2, 0, false))
	step("mark good B", do(d.MarkGood, b), 0, attr(1, 0, true), attr(2, 0, true))
	step("boots B", boot, 4, attr(1, 0, true), attr(2, 0, true))
	step("rollback to A", func() (int, error) { s, err := d.Rollback(b); return s.Number, err }, 3, attr(2, 0, true), attr(1, 0, true))
	step("boots A", boot, 3, attr(2, 0, true), attr(1, 0, true))
	step("install A", do(d.PrepareInstall, a), 0, attr(2, 1, false), attr(1, 0, true))
	step("boot A", boot, 4-1, attr(2, 0, false), attr(1, 0, true))
	step("mark A bad", do(d.MarkBad, a), 0, attr(0, 0, false), attr(1, 0, true))
	step("boots B", boot, 4, attr(0, 0, false), attr(1, 0, true))
}

// TestWritesTouchOnlyAttributes: every operation changes only the attribute words of the
// slots and the CRCs, in both copies; LBA 0, names, GUIDs, other entries and their bits
// stay byte-identical.
func TestWritesTouchOnlyAttributes(t *testing.T) {
	path := freshImage(t)
	before := readFile(t, path)
	d := openT(t, path)
	b, _ := d.SlotByLabel("USR-B")
	if err := d.PrepareInstall(b); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NextBoot(); err != nil {
		t.Fatal(err)
	}
	if err := d.MarkGood(b); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, path)
	onlyAttributesChanged(t, before, after, 512, 3, 4)
	if len(changedRanges(before, after)) == 0 {
		t.Fatal("nothing changed")
	}
}

// TestRefusalsLeaveImageUnchanged: every refused or failed operation leaves the image
// byte-identical.
func TestRefusalsLeaveImageUnchanged(t *testing.T) {
	other := Slot{Number: 4, Label: "USR-B", PartUUID: "00000000-0000-4000-8000-00000000000b"}
	for _, tc := range []struct {
		name    string
		a, b    Attributes
		ro      bool
		op      func(d *Disk, a, b Slot) error
		wantErr error
	}{
		{name: "mark bad the only bootable slot", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { return d.MarkBad(a) }, wantErr: ErrNoBootableSlot},
		{name: "begin install into the only bootable slot", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { return d.BeginInstall(a) }, wantErr: ErrNoBootableSlot},
		{name: "rollback to never-booted B", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { _, err := d.Rollback(a); return err }, wantErr: ErrRollbackRefused},
		{name: "rollback to pending B", a: attr(1, 0, true), b: attr(2, 1, false), op: func(d *Disk, a, b Slot) error { _, err := d.Rollback(a); return err }, wantErr: ErrRollbackRefused},
		{name: "slot of another disk", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { return d.PrepareInstall(other) }, wantErr: ErrUnknownSlot},
		{name: "not a slot", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { return d.MarkGood(Slot{Number: 9}) }, wantErr: ErrUnknownSlot},
		{name: "no bootable slot at all", op: func(d *Disk, a, b Slot) error { _, err := d.NextBoot(); return err }, wantErr: ErrNoBootableSlot},
		{name: "read-only install", a: attr(1, 0, true), ro: true, op: func(d *Disk, a, b Slot) error { return d.PrepareInstall(b) }, wantErr: ErrReadOnly},
		{name: "read-only slot write", a: attr(1, 0, true), ro: true, op: func(d *Disk, a, b Slot) error { _, err := d.SlotWriter(b).WriteAt([]byte("x"), 0); return err }, wantErr: ErrReadOnly},
		{name: "slot write past the end", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { _, err := d.SlotWriter(b).WriteAt([]byte("x"), b.Size+1); return err }, wantErr: ErrOutOfSlot},
		{name: "slot write at negative offset", a: attr(1, 0, true), op: func(d *Disk, a, b Slot) error { _, err := d.SlotWriter(b).WriteAt([]byte("x"), -1); return err }, wantErr: ErrOutOfSlot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := imageWith(t, tc.a, tc.b)
			before := fileHash(t, path)
			var opts []Option
			if tc.ro {
				opts = append(opts, ReadOnly())
			}
			d := openT(t, path, opts...)
			a, _ := d.SlotByLabel("USR-A")
			b, _ := d.SlotByLabel("USR-B")
			if err := tc.op(d, a, b); !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			d.Close()
			if fileHash(t, path) != before {
				t.Fatal("image changed")
			}
		})
	}
}

func TestIdempotentWritesNothing(t *testing.T) {
	path := imageWith(t, attr(1, 0, true), attr(2, 0, true))
	before := fileHash(t, path)
	d := openT(t, path)
	b, _ := d.SlotByLabel("USR-B")
	if err := d.MarkGood(b); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NextBoot(); err != nil { // successful, tries 0: GRUB writes nothing
		t.Fatal(err)
	}
	if fileHash(t, path) != before {
		t.Fatal("a no-op changed the image")
	}
}

func TestRepair(t *testing.T) {
	const ss, size = 512, 8 << 20
	last := int64(size/ss - 1)
	for _, tc := range []struct {
		name      string
		off       int64
		primary   bool // which copy is damaged
		wantRepl  bool
		wantClean bool
	}{
		{name: "primary header", off: ss + 30, primary: true},
		{name: "primary signature", off: ss, primary: true},
		{name: "primary entry array", off: 2*ss + 2*128 + 60, primary: true},
		{name: "backup header", off: last*ss + 40},
		{name: "backup entry array", off: (last-32)*ss + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := freshImage(t)
			good := readFile(t, path)
			b := good[tc.off]
			patch(t, path, tc.off, []byte{b ^ 0x55})
			d := openT(t, path)
			h, err := d.Health()
			if err != nil {
				t.Fatal(err)
			}
			if (h.PrimaryErr != nil) != tc.primary || (h.BackupErr != nil) == tc.primary || h.InSync {
				t.Fatalf("health %+v", h)
			}
			if s := slotsT(t, d); s[0].Attr != attr(1, 0, true)|1<<60 || s[1].Label != "USR-B" {
				t.Fatalf("slots read from the good copy: %v", s)
			}
			fixed, err := d.Repair()
			if err != nil || !fixed {
				t.Fatalf("Repair = %v, %v", fixed, err)
			}
			if !bytes.Equal(readFile(t, path)[512:], good[512:]) {
				t.Fatal("repaired image differs from the original beyond LBA 0")
			}
			if h, _ := d.Health(); !h.InSync || h.PrimaryErr != nil || h.BackupErr != nil {
				t.Fatalf("after repair: %+v", h)
			}
			if fixed, err := d.Repair(); fixed || err != nil {
				t.Fatalf("second Repair = %v, %v", fixed, err)
			}
		})
	}
}

// TestWriteRepairsDamagedPrimary: an operation on a disk whose primary is damaged writes
// the new table into both copies.
func TestWriteRepairsDamagedPrimary(t *testing.T) {
	path := freshImage(t)
	patch(t, path, 512+8, []byte{9}) // revision
	d := openT(t, path)
	if err := d.PrepareInstall(Slot{Number: 4}); err != nil {
		t.Fatal(err)
	}
	h, _ := d.Health()
	if !h.InSync {
		t.Fatalf("health %+v", h)
	}
	if s := slotsT(t, d); s[1].Attr != attr(2, 1, false)|1<<57 {
		t.Fatalf("B %v", s[1].Attr)
	}
}

// TestLockWait: a holder that lets go within the wait (as udev's probe of a block device
// does) is waited for; one that does not still gives ErrBusy.
func TestLockWait(t *testing.T) {
	path := freshImage(t)
	d := openT(t, path)
	if _, err := Open(path, LockWait(150*time.Millisecond)); !errors.Is(err, ErrBusy) {
		t.Fatalf("holder kept the lock: %v", err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(100 * time.Millisecond)
		d.Close()
		close(released)
	}()
	d2, err := Open(path, LockWait(time.Minute))
	if err != nil {
		t.Fatalf("the holder let go within the wait: %v", err)
	}
	<-released
	d2.Close()
}

// TestStartWriteback: handing a range to the device early keeps what was written, clamps to
// the slot, and does nothing on a read-only disk.
func TestStartWriteback(t *testing.T) {
	path := freshImage(t)
	d := openT(t, path)
	b := slotsT(t, d)[1]
	data := bytes.Repeat([]byte{0x5a}, 64<<10)
	slot := d.SlotIO(b) // as an install writes it
	if _, err := slot.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	slot.StartWriteback(4096, int64(len(data)))
	d.StartWriteback(b, b.Size-10, 1<<30) // past the end: clamped, harmless
	d.StartWriteback(b, -1, 10)
	if err := slot.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := slot.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("slot after writeback: %v", err)
	}
	d.Close()
	r := openT(t, path, ReadOnly())
	r.StartWriteback(b, 0, 4096)
}

func TestBusy(t *testing.T) {
	path := freshImage(t)
	d := openT(t, path)
	if _, err := Open(path); !errors.Is(err, ErrBusy) {
		t.Fatalf("second writer: %v", err)
	}
	r := openT(t, path, ReadOnly()) // readers take no lock
	if _, err := r.Slots(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2, err := Open(path)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	d2.Close()
}

func TestSlotReadWrite(t *testing.T) {
	path := freshImage(t)
	before := readFile(t, path)
	d := openT(t, path)
	b, _ := d.SlotByLabel("USR-B")
	w := d.SlotWriter(b)
	if n, err := w.WriteAt([]byte("hello"), 0); n != 5 || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if n, err := w.WriteAt([]byte("tail!"), b.Size-3); n != 3 || !errors.Is(err, ErrOutOfSlot) {
		t.Fatalf("WriteAt past the end = %d, %v", n, err)
	}
	if n, err := w.WriteAt(nil, b.Size); n != 0 || err != nil {
		t.Fatalf("empty write at the end = %d, %v", n, err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(d.SlotReader(b))
	if err != nil || int64(len(got)) != b.Size {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if string(got[:5]) != "hello" || string(got[len(got)-3:]) != "tai" {
		t.Fatalf("slot content %q … %q", got[:5], got[len(got)-3:])
	}
	after := readFile(t, path)
	for _, r := range changedRanges(before, after) {
		if int64(r[0]) < b.Start || int64(r[1]) > b.Start+b.Size {
			t.Fatalf("bytes %d..%d outside the slot changed", r[0], r[1])
		}
	}
}

func TestSectorSize4K(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk4k.img")
	writeImage(t, path, 16<<20, 4096, testLayout(4096, 1<<20, attr(1, 0, true), 0))
	if _, err := Open(path, ReadOnly()); !errors.Is(err, ErrNotGPT) {
		t.Fatalf("512-byte open of a 4K disk: %v", err)
	}
	d := openT(t, path, SectorSize(4096))
	b, err := d.SlotByLabel("USR-B")
	if err != nil || b.Start != 4<<20 || b.Size != 2<<20 {
		t.Fatalf("B %+v %v", b, err)
	}
	if err := d.PrepareInstall(b); err != nil {
		t.Fatal(err)
	}
	if s, err := d.NextBoot(); err != nil || s.Number != 4 {
		t.Fatalf("NextBoot %v %v", s, err)
	}
	if h, _ := d.Health(); !h.InSync {
		t.Fatalf("health %+v", h)
	}
}

// TestUnsupportedLayouts: valid GPTs that go-diskfs would not write back unchanged are
// refused for writing and left alone.
func TestUnsupportedLayouts(t *testing.T) {
	// A name with bytes after its terminating NUL: go-diskfs would drop them.
	path := freshImage(t)
	raw := readFile(t, path)
	entry := 2*512 + 0*128 // EFI entry
	raw[entry+56+40] = 'Z' // after "EFI-SYSTEM\0"
	fixCRCs(raw, 512)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	d := openT(t, path)
	if err := d.PrepareInstall(Slot{Number: 4}); !errors.Is(err, ErrUnsupportedTable) {
		t.Fatalf("PrepareInstall: %v", err)
	}
	d.Close()
	if fileHash(t, path) != before {
		t.Fatal("image changed")
	}
}

// TestForeignLayoutIsNeverWritten: a valid GPT whose entry arrays are not where go-diskfs
// writes them (sgdisk -j moves the primary array, e.g. where firmware lives in the first
// sectors) is read from the primary, as GRUB reads it, but every write is refused with
// ErrUnsupportedTable and the disk stays byte-identical: a "repair" would write an array
// over sectors the table does not use.
func TestForeignLayoutIsNeverWritten(t *testing.T) {
	const ss, last = 512, 8<<20/512 - 1
	for _, tc := range []struct {
		name    string
		make    func(t *testing.T) (path string, marker int64)
		wantMsg string
	}{
		{name: "primary array at LBA 1024", wantMsg: "sgdisk -j 2", make: func(t *testing.T) (string, int64) {
			path := imageWith(t, attr(1, 0, true), attr(2, 1, false))
			raw := readFile(t, path)
			copy(raw[1024*ss:], raw[2*ss:34*ss])
			clear(raw[2*ss : 34*ss])
			setHeaderField(raw, ss, 72, 1024)       // entry array LBA
			setHeaderField(raw, ss, 40, 1056)       // first usable LBA
			setHeaderField(raw, last*ss, 40, 1056)  // the backup agrees
			copy(raw[16*ss:], "firmware at LBA 16") // where a repair would write the array
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			return path, 16 * ss
		}},
		{name: "backup array not right before the backup header", wantMsg: "sgdisk -e", make: func(t *testing.T) (string, int64) {
			path := imageWith(t, attr(1, 0, true), attr(2, 1, false))
			raw := readFile(t, path)
			copy(raw[16000*ss:], raw[(last-32)*ss:last*ss])
			clear(raw[(last-32)*ss : last*ss])
			setHeaderField(raw, last*ss, 72, 16000)
			setHeaderField(raw, last*ss, 48, 15999) // last usable LBA
			setHeaderField(raw, ss, 48, 15999)
			copy(raw[(last-20)*ss:], "data at the end of the disk")
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			return path, (last - 20) * ss
		}},
		{name: "sgdisk -j 2048", wantMsg: "sgdisk -j 2", make: func(t *testing.T) (string, int64) {
			sgdisk, err := exec.LookPath("sgdisk")
			if err != nil {
				t.Skip("sgdisk not installed (apt-get install gdisk); skipping")
			}
			path := filepath.Join(t.TempDir(), "j.img")
			if err := os.WriteFile(path, make([]byte, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), sgdisk, "-j", "2048",
				"-n", "1:4096:+1M", "-t", "1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "-c", "1:EFI-SYSTEM",
				"-n", "3:0:+2M", "-t", "3:"+TypeUSR, "-c", "3:USR-A", "-u", "3:"+guidA, "-A", "3:set:48", "-A", "3:set:56",
				"-n", "4:0:+2M", "-t", "4:"+TypeUSR, "-c", "4:USR-B", "-u", "4:"+guidB, "-A", "4:set:49", "-A", "4:set:52",
				path).CombinedOutput()
			if err != nil {
				t.Fatalf("sgdisk: %v\n%s", err, out)
			}
			patch(t, path, 16*ss, []byte("firmware at LBA 16"))
			return path, 16 * ss
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, marker := tc.make(t)
			before := readFile(t, path)
			d := openT(t, path)
			s := slotsT(t, d)
			if len(s) != 2 || s[0].Attr != attr(1, 0, true) || s[1].Attr != attr(2, 1, false) {
				t.Fatalf("slots %v", s)
			}
			if next, _, err := Next(s); err != nil || next.Number != 4 {
				t.Fatalf("Next: %v %v", next, err)
			}
			h, err := d.Health()
			if err != nil || h.InSync || !errors.Is(errors.Join(h.PrimaryErr, h.BackupErr), ErrUnsupportedTable) {
				t.Fatalf("health %+v %v", h, err)
			}
			a, b := s[0], s[1]
			for name, op := range map[string]func() error{
				"NextBoot":        func() error { _, err := d.NextBoot(); return err },
				"PrepareInstall":  func() error { return d.PrepareInstall(b) },
				"MarkGood":        func() error { return d.MarkGood(b) },
				"MarkBad":         func() error { return d.MarkBad(b) },
				"BeginInstall":    func() error { return d.BeginInstall(b) },
				"Rollback":        func() error { _, err := d.Rollback(b); return err },
				"Repair":          func() error { _, err := d.Repair(); return err },
				"MarkGood active": func() error { return d.MarkGood(a) },
			} {
				err := op()
				if !errors.Is(err, ErrUnsupportedTable) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("%s: %v, want %v with %q", name, err, ErrUnsupportedTable, tc.wantMsg)
				}
			}
			after := readFile(t, path)
			if !bytes.Equal(after, before) {
				t.Errorf("disk changed: bytes %v", changedRanges(before, after))
			}
			if !bytes.Equal(after[marker:marker+16], before[marker:marker+16]) {
				t.Errorf("the sectors the table does not use were overwritten")
			}
		})
	}
}

// TestGrownDisk: an image written to a larger disk keeps its backup GPT at the image's old
// end (as dd leaves it). Both copies are intact, and GRUB (which finds the backup at the
// primary's alternate LBA) and the kernel read the table: it is read here too, not called
// corrupt, but every write is refused with ErrUnsupportedTable, whose message starts with
// the fix, 'sgdisk -e', and the disk is left as it was. After sgdisk -e writes work.
func TestGrownDisk(t *testing.T) {
	path := imageWith(t, attr(1, 0, true), attr(2, 1, false))
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, path)
	d := openT(t, path)
	s := slotsT(t, d)
	if len(s) != 2 || s[0].Attr != attr(1, 0, true) || s[1].Attr != attr(2, 1, false) {
		t.Fatalf("slots %v", s)
	}
	h, err := d.Health()
	if err != nil || !errors.Is(h.PrimaryErr, ErrUnsupportedTable) || !strings.Contains(h.PrimaryErr.Error(), "sgdisk -e") {
		t.Fatalf("health %+v %v", h, err)
	}
	const lead = "unsupported GPT layout: run 'sgdisk -e' on this disk"
	for name, op := range map[string]func() error{
		"NextBoot":       func() error { _, err := d.NextBoot(); return err },
		"PrepareInstall": func() error { return d.PrepareInstall(s[1]) },
		"MarkGood":       func() error { return d.MarkGood(s[0]) },
		"Repair":         func() error { _, err := d.Repair(); return err },
	} {
		err := op()
		if !errors.Is(err, ErrUnsupportedTable) || errors.Is(err, ErrBothTablesCorrupt) || !strings.Contains(err.Error(), lead) {
			t.Errorf("%s: %v, want %q", name, err, lead)
		}
	}
	d.Close()
	if fileHash(t, path) != before {
		t.Fatal("image changed")
	}

	sgdisk, err := exec.LookPath("sgdisk")
	if err != nil {
		t.Skip("sgdisk not installed (apt-get install gdisk); skipping the repair with sgdisk -e")
	}
	if out, err := exec.CommandContext(t.Context(), sgdisk, "-e", path).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk -e: %v\n%s", err, out)
	}
	d = openT(t, path)
	if next, err := d.NextBoot(); err != nil || next.Number != 4 {
		t.Fatalf("NextBoot after sgdisk -e: %v %v", next, err)
	}
	if h, err := d.Health(); err != nil || !h.InSync {
		t.Fatalf("health after sgdisk -e: %+v %v", h, err)
	}
}

// TestSgdiskVerify cross-checks every state of the lifecycle with sgdisk -v.
func TestSgdiskVerify(t *testing.T) {
	sgdisk, err := exec.LookPath("sgdisk")
	if err != nil {
		t.Skip("sgdisk not installed (apt-get install gdisk); skipping the cross-check")
	}
	verify := func(when, path string) {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), sgdisk, "-v", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("%s: sgdisk -v: %v\n%s", when, err, out)
		}
	}
	path := freshImage(t)
	verify("fresh", path)
	d := openT(t, path)
	b, _ := d.SlotByLabel("USR-B")
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"install", func() error { return d.PrepareInstall(b) }},
		{"boot", func() error { _, err := d.NextBoot(); return err }},
		{"mark good", func() error { return d.MarkGood(b) }},
		{"rollback", func() error { _, err := d.Rollback(b); return err }},
	} {
		if err := op.f(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		verify(op.name, path)
	}
	out, err := exec.CommandContext(t.Context(), sgdisk, "-i", "4", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Attribute flags: 0301000000000000") {
		t.Fatalf("sgdisk -i 4 after rollback (want P=1 S=1 and bit 57):\n%s", out)
	}
}

// TestSgdiskMadeDisk: a table written by sgdisk (its own layout choices, odd attribute bits,
// a Unicode name, gaps) is read and changed with only attribute and CRC bytes differing.
func TestSgdiskMadeDisk(t *testing.T) {
	sgdisk, err := exec.LookPath("sgdisk")
	if err != nil {
		t.Skip("sgdisk not installed (apt-get install gdisk); skipping")
	}
	path := filepath.Join(t.TempDir(), "sg.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 16<<20); err != nil {
		t.Fatal(err)
	}
	args := []string{"-o",
		"-n", "1:2048:+1M", "-t", "1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "-c", "1:EFI-SYSTEM",
		"-n", "3:0:+4M", "-t", "3:" + TypeUSR, "-c", "3:USR-A", "-u", "3:" + guidA, "-A", "3:set:48", "-A", "3:set:56", "-A", "3:set:60",
		"-n", "4:0:+4M", "-t", "4:" + TypeUSR, "-c", "4:USR-B", "-u", "4:" + guidB, "-A", "4:set:2",
		"-n", "9:0:0", "-c", "9:RöOT-ü", "-A", "9:set:63",
		path}
	if out, err := exec.CommandContext(t.Context(), sgdisk, args...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk: %v\n%s", err, out)
	}
	before := readFile(t, path)
	d := openT(t, path)
	s := slotsT(t, d)
	if len(s) != 2 || s[0].Attr != attr(1, 0, true)|1<<60 || s[1].Attr != 1<<2 {
		t.Fatalf("slots %v", s)
	}
	if err := d.PrepareInstall(s[1]); err != nil {
		t.Fatal(err)
	}
	onlyAttributesChanged(t, before, readFile(t, path), 512, 4)
	out, err := exec.CommandContext(t.Context(), sgdisk, "-v", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	out, _ = exec.CommandContext(t.Context(), sgdisk, "-i", "4", path).CombinedOutput()
	if !strings.Contains(string(out), "Attribute flags: 0012000000000004") {
		t.Fatalf("sgdisk -i 4:\n%s", out)
	}
}
