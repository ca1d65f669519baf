package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"slices"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"
)

// Limits on what is read from a disk. A header asking for more is a table this package does
// not read (ErrUnsupportedTable).
const (
	// MaxEntries is the largest partition entry array read (UEFI requires room for 128).
	MaxEntries = 1024
	// MinSectorSize and MaxSectorSize bound the logical sector size.
	MinSectorSize = 512
	MaxSectorSize = 4096

	entrySize    = 128 // the only entry size go-diskfs writes
	headerSize   = 92
	attrOffset   = 48 // attributes within an entry
	gptSignature = "EFI PART"
	gptRevision  = 0x00010000
)

var errNoSignature = errors.New("no GPT signature")

// header is the parsed content of one GPT header sector.
type header struct {
	myLBA, altLBA           uint64
	firstUsable, lastUsable uint64
	diskGUID                [16]byte
	arrayLBA                uint64
	count, entrySize        uint32
	arrayCRC                uint32
}

// parseHeader checks one header sector on its own: signature, header size and CRC, reserved
// field and revision. An error wrapping ErrUnsupportedTable means the header is intact (its
// CRC checks) but of a kind this package does not read; any other error means it is damaged.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize {
		return h, fmt.Errorf("header sector is %d bytes", len(b))
	}
	if string(b[0:8]) != gptSignature {
		return h, errNoSignature
	}
	n := binary.LittleEndian.Uint32(b[12:16])
	if n < headerSize || uint64(n) > uint64(len(b)) {
		return h, fmt.Errorf("header size %d outside %d..%d", n, headerSize, len(b))
	}
	hb := slices.Clone(b[:n])
	want := binary.LittleEndian.Uint32(hb[16:20])
	clear(hb[16:20])
	if got := crc32.ChecksumIEEE(hb); got != want {
		return h, fmt.Errorf("header CRC %#08x does not match its content (%#08x)", want, got)
	}
	if binary.LittleEndian.Uint32(b[20:24]) != 0 {
		return h, errors.New("reserved header field is not zero")
	}
	if r := binary.LittleEndian.Uint32(b[8:12]); r != gptRevision {
		return h, fmt.Errorf("%w: header revision %#x (want 1.0)", ErrUnsupportedTable, r)
	}
	if n != headerSize {
		return h, fmt.Errorf("%w: header size %d (want %d)", ErrUnsupportedTable, n, headerSize)
	}
	h.myLBA = binary.LittleEndian.Uint64(b[24:32])
	h.altLBA = binary.LittleEndian.Uint64(b[32:40])
	h.firstUsable = binary.LittleEndian.Uint64(b[40:48])
	h.lastUsable = binary.LittleEndian.Uint64(b[48:56])
	copy(h.diskGUID[:], b[56:72])
	h.arrayLBA = binary.LittleEndian.Uint64(b[72:80])
	h.count = binary.LittleEndian.Uint32(b[80:84])
	h.entrySize = binary.LittleEndian.Uint32(b[84:88])
	h.arrayCRC = binary.LittleEndian.Uint32(b[88:92])
	return h, nil
}

// arraySectors is the length of the entry array in whole sectors.
func (h header) arraySectors(ss int) uint64 {
	return (uint64(h.count)*uint64(h.entrySize) + uint64(ss) - 1) / uint64(ss)
}

func copyName(primary bool) string {
	if primary {
		return "primary"
	}
	return "backup"
}

// checkSound checks what every reader of a GPT (GRUB, the kernel) needs of a header found at
// LBA 1 (primary) or at the last LBA lastLBA of the disk: that it says it is where it was
// found, that its partner is on the disk (the primary for a backup), and that its usable
// area and its entry array lie on the disk clear of each other and of both headers. A header
// that fails is damaged. It returns an error wrapping ErrUnsupportedTable for an entry size
// or count this package does not read.
func (h header) checkSound(ss int, lastLBA uint64, primary bool) error {
	wantMy := uint64(1)
	if !primary {
		wantMy = lastLBA
	}
	switch {
	case h.myLBA != wantMy:
		return fmt.Errorf("header says it is at LBA %d but was read from LBA %d", h.myLBA, wantMy)
	case primary && (h.altLBA < 2 || h.altLBA > lastLBA):
		return fmt.Errorf("header puts the backup at LBA %d, outside the disk's LBAs 2..%d (is the disk smaller than the image written to it?)", h.altLBA, lastLBA)
	case !primary && h.altLBA != 1:
		return fmt.Errorf("header puts the primary at LBA %d, not at LBA 1", h.altLBA)
	case h.count == 0:
		return errors.New("entry count is 0")
	case h.entrySize != entrySize:
		return fmt.Errorf("%w: entry size %d (want %d)", ErrUnsupportedTable, h.entrySize, entrySize)
	case h.count > MaxEntries:
		return fmt.Errorf("%w: %d entries (at most %d are read)", ErrUnsupportedTable, h.count, MaxEntries)
	}
	n := h.arraySectors(ss)
	inUsable := func(lba uint64) bool { return lba >= h.firstUsable && lba <= h.lastUsable }
	inArray := func(lba uint64) bool { return lba >= h.arrayLBA && lba-h.arrayLBA < n }
	switch {
	case h.firstUsable < 2 || h.lastUsable >= lastLBA || h.firstUsable > h.lastUsable+1:
		return fmt.Errorf("usable LBAs %d..%d are not inside the disk's LBAs 2..%d", h.firstUsable, h.lastUsable, lastLBA-1)
	case inUsable(h.myLBA) || inUsable(h.altLBA):
		return fmt.Errorf("usable LBAs %d..%d include a GPT header", h.firstUsable, h.lastUsable)
	case h.arrayLBA < 2 || h.arrayLBA > lastLBA || n > lastLBA-h.arrayLBA+1:
		return fmt.Errorf("entry array at LBA %d (%d sectors) is not inside the disk's LBAs 2..%d", h.arrayLBA, n, lastLBA)
	case inArray(h.myLBA) || inArray(h.altLBA):
		return fmt.Errorf("entry array at LBA %d..%d includes a GPT header", h.arrayLBA, h.arrayLBA+n-1)
	case h.firstUsable <= h.lastUsable && h.arrayLBA <= h.lastUsable && h.firstUsable <= h.arrayLBA+n-1:
		return fmt.Errorf("entry array at LBA %d..%d overlaps the usable LBAs %d..%d", h.arrayLBA, h.arrayLBA+n-1, h.firstUsable, h.lastUsable)
	}
	return nil
}

// checkLayout checks a sound header against the layout go-diskfs writes back unchanged:
// 128-byte entries filling whole sectors, the backup header at the last LBA, the primary
// array at LBA 2 and the backup array right before the backup header, usable area clear of
// both. Every error wraps
// ErrUnsupportedTable: the copy is a valid GPT, and writing ours over it would move its
// structures onto sectors it does not use (which may hold anything).
func (h header) checkLayout(ss int, lastLBA uint64, primary bool) error {
	if uint64(h.count)*entrySize%uint64(ss) != 0 {
		return fmt.Errorf("%w: the %s header's %d entries do not fill whole %d-byte sectors; twinslot does not rewrite such a table",
			ErrUnsupportedTable, copyName(primary), h.count, ss)
	}
	n := h.arraySectors(ss)
	if lastLBA < 2*n+3 {
		return fmt.Errorf("%w: disk of %d sectors is too small for two %d-sector entry arrays", ErrUnsupportedTable, lastLBA+1, n)
	}
	backupArray := lastLBA - n
	switch {
	case primary && h.altLBA != lastLBA:
		// A disk grown after the image was written to it: GRUB and the kernel read the table
		// (GRUB finds the backup at altLBA), but go-diskfs would write the backup at the end.
		return fmt.Errorf("%w: run 'sgdisk -e' on this disk to move the backup GPT to its end: the primary header puts the backup at LBA %d, "+
			"but the disk's last LBA is %d (the disk grew after the image was written to it); until then twinslot will not change this table",
			ErrUnsupportedTable, h.altLBA, lastLBA)
	case primary && h.arrayLBA != 2:
		return fmt.Errorf("%w: the primary entry array is at LBA %d, not at LBA 2 right after the primary header, so twinslot will not change this table; "+
			"move the array with 'sgdisk -j 2' if LBAs 2..%d hold nothing else, or change the slot attributes with sgdisk -A or cgpt",
			ErrUnsupportedTable, h.arrayLBA, 1+n)
	case !primary && h.arrayLBA != backupArray:
		return fmt.Errorf("%w: the backup entry array is at LBA %d, not at LBA %d right before the backup header, so twinslot will not change this table; "+
			"run 'sgdisk -e' to rewrite the backup at the end of the disk", ErrUnsupportedTable, h.arrayLBA, backupArray)
	case h.firstUsable < 2+n || h.lastUsable >= backupArray:
		return fmt.Errorf("%w: the %s header's usable LBAs %d..%d overlap LBAs 2..%d or %d..%d where twinslot writes the entry arrays, so twinslot will not change this table",
			ErrUnsupportedTable, copyName(primary), h.firstUsable, h.lastUsable, 1+n, backupArray, lastLBA-1)
	}
	return nil
}

// copyState is one of the two GPT copies as found on disk. A copy is valid (err nil), or
// foreign: sound and intact but in a layout this package does not write, or damaged.
type copyState struct {
	hdr   header
	array []byte // the entry array, CRC-checked; nil when the copy cannot be read
	err   error  // nil when the copy is valid
	// foreign: the header is intact (CRC) and sound but not in the layout this package
	// writes (err wraps ErrUnsupportedTable). Nothing is ever written over it.
	foreign bool
}

// readable reports whether the copy's table can be read: it is valid, or foreign with an
// intact entry array.
func (c *copyState) readable() bool { return c.array != nil }

// readCopy reads and checks the primary (at LBA 1) or the backup (at lastLBA) copy.
func readCopy(r io.ReaderAt, ss int, lastLBA uint64, primary bool) copyState {
	lba := lastLBA
	if primary {
		lba = 1
	}
	sec := make([]byte, ss)
	if _, err := r.ReadAt(sec, int64(lba)*int64(ss)); err != nil {
		return copyState{err: fmt.Errorf("read header at LBA %d: %w", lba, err)}
	}
	h, err := parseHeader(sec)
	if err == nil {
		err = h.checkSound(ss, lastLBA, primary)
	}
	if err != nil {
		return copyState{hdr: h, err: err, foreign: errors.Is(err, ErrUnsupportedTable)}
	}
	layout := h.checkLayout(ss, lastLBA, primary)
	arr := make([]byte, int(h.count)*entrySize)
	if _, err = r.ReadAt(arr, int64(h.arrayLBA)*int64(ss)); err != nil {
		err = fmt.Errorf("read entry array at LBA %d: %w", h.arrayLBA, err)
	} else if got := crc32.ChecksumIEEE(arr); got != h.arrayCRC {
		err = fmt.Errorf("entry array CRC %#08x does not match the header's %#08x", got, h.arrayCRC)
	}
	switch {
	case err != nil && layout != nil:
		return copyState{hdr: h, err: fmt.Errorf("%w; and its %v", layout, err), foreign: true}
	case err != nil:
		return copyState{hdr: h, err: err}
	}
	return copyState{hdr: h, array: arr, err: layout, foreign: layout != nil}
}

// table is one consistent reading of a disk's GPT.
type table struct {
	ss      int
	size    int64
	lastLBA uint64
	primary copyState
	backup  copyState
	use     *copyState // primary when valid, else backup
	gt      *gpt.Table // go-diskfs' view of the same copy
	slots   []Slot
	// unsupported is set when a copy is foreign: the table is read but never written.
	unsupported error
}

func (t *table) fromBackup() bool { return t.use == &t.backup }

// inSync reports whether both copies are valid and describe the same table.
func (t *table) inSync() bool {
	p, b := t.primary, t.backup
	return p.err == nil && b.err == nil && bytes.Equal(p.array, b.array) &&
		p.hdr.firstUsable == b.hdr.firstUsable && p.hdr.lastUsable == b.hdr.lastUsable &&
		p.hdr.diskGUID == b.hdr.diskGUID
}

// readTable reads and validates both GPT copies of a disk of size bytes, picks the copy to
// use (the primary unless it cannot be read, as GRUB and the kernel do) and decodes it.
func readTable(r io.ReaderAt, size int64, ss int) (*table, error) {
	if ss < MinSectorSize || ss > MaxSectorSize || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("sector size %d is not a power of two in %d..%d", ss, MinSectorSize, MaxSectorSize)
	}
	if size%int64(ss) != 0 {
		return nil, fmt.Errorf("%w: disk size %d is not a multiple of the %d-byte sector size", ErrNotGPT, size, ss)
	}
	if size < 3*int64(ss) {
		return nil, fmt.Errorf("%w: disk of %d bytes is too small to hold a GPT", ErrNotGPT, size)
	}
	t := &table{ss: ss, size: size, lastLBA: uint64(size/int64(ss)) - 1}
	t.primary = readCopy(r, ss, t.lastLBA, true)
	t.backup = readCopy(r, ss, t.lastLBA, false)
	switch {
	case t.primary.readable():
		t.use = &t.primary
	case t.backup.readable():
		t.use = &t.backup
	case errors.Is(t.primary.err, errNoSignature) && errors.Is(t.backup.err, errNoSignature):
		return nil, fmt.Errorf("%w: no GPT header at LBA 1 or at the last LBA %d (blank, MBR-only or not a disk image?)", ErrNotGPT, t.lastLBA)
	case t.primary.foreign || t.backup.foreign:
		return nil, fmt.Errorf("%w: neither GPT copy can be read (primary: %v; backup: %v)", ErrUnsupportedTable, t.primary.err, t.backup.err)
	default:
		return nil, fmt.Errorf("%w: primary: %v; backup: %v — restore the disk from a known-good image", ErrBothTablesCorrupt, t.primary.err, t.backup.err)
	}
	for _, c := range []*copyState{&t.primary, &t.backup} {
		if c.foreign && t.unsupported == nil {
			t.unsupported = c.err
		}
	}
	// Decode with go-diskfs. Hide the primary when it is invalid so go-diskfs reads the
	// same copy we checked (its own checks are a subset of ours).
	gt, err := gpt.Read(&view{r: r, size: size, hide: t.fromBackup(), ss: ss}, ss, ss)
	if err != nil {
		return nil, fmt.Errorf("decode GPT: %w", err)
	}
	if gt.RecoveredFromBackup != t.fromBackup() {
		return nil, fmt.Errorf("decode GPT: go-diskfs read the %s copy, expected the other", map[bool]string{true: "backup", false: "primary"}[gt.RecoveredFromBackup])
	}
	t.gt = gt
	if t.slots, err = slotsOf(gt, t.use.hdr); err != nil {
		return nil, err
	}
	return t, nil
}

// slotsOf returns the /usr slots of gt in table order, after checking that each lies inside
// the usable area and overlaps no other partition.
func slotsOf(gt *gpt.Table, h header) ([]Slot, error) {
	var slots []Slot
	ss := uint64(gt.LogicalSectorSize)
	for _, p := range gt.Partitions {
		if !strings.EqualFold(string(p.Type), TypeUSR) {
			continue
		}
		if p.Start < h.firstUsable || p.End > h.lastUsable || p.End < p.Start {
			return nil, fmt.Errorf("%w: /usr partition %d (%q) spans LBA %d..%d, outside the usable %d..%d",
				ErrBadEntry, p.Index, p.Name, p.Start, p.End, h.firstUsable, h.lastUsable)
		}
		for _, q := range gt.Partitions {
			if q != p && q.Start <= p.End && p.Start <= q.End {
				return nil, fmt.Errorf("%w: /usr partition %d (%q) overlaps partition %d (%q)", ErrBadEntry, p.Index, p.Name, q.Index, q.Name)
			}
		}
		slots = append(slots, Slot{
			Number:   p.Index,
			Label:    p.Name,
			PartUUID: strings.ToLower(p.GUID),
			Start:    int64(p.Start * ss),
			Size:     int64((p.End - p.Start + 1) * ss),
			Attr:     Attributes(p.Attributes),
		})
	}
	return slots, nil
}

// write is one write of a table update, in the order it must reach the disk.
type write struct {
	what string
	off  int64
	data []byte
}

// plan returns the writes that store slots (same partitions, new attributes) into both
// copies. go-diskfs serialises the table; the result is checked to differ from the copy in
// use only in the attribute words of the slots and in the CRCs, so nothing else on the disk
// (names, GUIDs, unknown bits, unused entries, LBA 0) can change. The invalid copy is
// written first, so a valid copy exists at every moment; with both valid the backup goes
// first, as GRUB does. force writes even when nothing changed (repair). A table with a
// foreign copy is never written: the error wraps ErrUnsupportedTable.
func (t *table) plan(slots []Slot, force bool) ([]write, error) {
	if t.unsupported != nil {
		return nil, fmt.Errorf("%w; the GPT was not changed", t.unsupported)
	}
	want := slices.Clone(t.use.array)
	for _, s := range slots {
		off := (s.Number-1)*entrySize + attrOffset
		if s.Number < 1 || off+8 > len(want) {
			return nil, fmt.Errorf("%w: partition %d is not in the table", ErrUnknownSlot, s.Number)
		}
		binary.LittleEndian.PutUint64(want[off:], uint64(s.Attr))
	}
	if !force && t.inSync() && bytes.Equal(want, t.use.array) {
		return nil, nil
	}
	gt := *t.gt // the fields we change are per partition: copy those too
	gt.ProtectiveMBR = false
	gt.Partitions = make([]*gpt.Partition, len(t.gt.Partitions))
	for i, p := range t.gt.Partitions {
		q := *p
		if j := slices.IndexFunc(slots, func(s Slot) bool { return s.Number == q.Index }); j >= 0 {
			q.Attributes = uint64(slots[j].Attr)
		}
		gt.Partitions[i] = &q
	}
	rec := &recorder{view: view{size: t.size, ss: t.ss}}
	if err := gt.Write(rec, t.size); err != nil {
		return nil, fmt.Errorf("serialise GPT: %w", err)
	}
	ws, err := t.checkWrites(rec.writes, want)
	if err != nil {
		return nil, fmt.Errorf("%w: refusing to write: %v", ErrUnsupportedTable, err)
	}
	if t.primary.err != nil {
		ws = append(ws[2:], ws[:2]...) // primary first: the backup is the only good copy
	}
	return ws, nil
}

// checkWrites checks that go-diskfs produced exactly backup array, backup header, primary
// array, primary header, with the arrays equal to want and headers that describe the
// same disk as the copy in use.
func (t *table) checkWrites(ws []write, want []byte) ([]write, error) {
	ss := int64(t.ss)
	h := t.use.hdr
	backupArray := int64(t.lastLBA-h.arraySectors(t.ss)) * ss
	expect := []struct {
		what string
		off  int64
	}{
		{"backup entry array", backupArray},
		{"backup header", int64(t.lastLBA) * ss},
		{"primary entry array", 2 * ss},
		{"primary header", ss},
	}
	if len(ws) != len(expect) {
		return nil, fmt.Errorf("go-diskfs made %d writes, expected %d", len(ws), len(expect))
	}
	for i, e := range expect {
		ws[i].what = e.what
		if ws[i].off != e.off {
			return nil, fmt.Errorf("%s written at offset %d, expected %d", e.what, ws[i].off, e.off)
		}
	}
	for _, i := range []int{0, 2} {
		if !bytes.Equal(ws[i].data, want) {
			return nil, fmt.Errorf("%s would change more than the slot attributes (names, GUIDs or unused entries are not preserved)", ws[i].what)
		}
	}
	crc := crc32.ChecksumIEEE(want)
	for _, i := range []int{1, 3} {
		primary := i == 3
		got, err := parseHeader(ws[i].data)
		if err == nil {
			err = got.checkSound(t.ss, t.lastLBA, primary)
		}
		if err == nil {
			err = got.checkLayout(t.ss, t.lastLBA, primary)
		}
		if err != nil {
			return nil, fmt.Errorf("%s is invalid: %v", ws[i].what, err)
		}
		if got.arrayCRC != crc || got.diskGUID != h.diskGUID || got.firstUsable != h.firstUsable ||
			got.lastUsable != h.lastUsable || got.count != h.count || len(ws[i].data) != t.ss {
			return nil, fmt.Errorf("%s does not describe the same disk", ws[i].what)
		}
	}
	return ws, nil
}

// view presents a disk to go-diskfs as a backend.WritableFile. With hide set, LBA 1 reads
// as zeros so go-diskfs falls back to the backup copy.
type view struct {
	r    io.ReaderAt
	size int64
	ss   int
	hide bool
	pos  int64
}

func (v *view) ReadAt(p []byte, off int64) (int, error) {
	if v.r == nil {
		return 0, errors.New("view: not readable")
	}
	n, err := v.r.ReadAt(p, off)
	if v.hide {
		lo, hi := max(off, int64(v.ss)), min(off+int64(n), 2*int64(v.ss))
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
	return n, err
}

func (v *view) Read(p []byte) (int, error) {
	n, err := v.ReadAt(p, v.pos)
	v.pos += int64(n)
	return n, err
}

func (v *view) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += v.pos
	case io.SeekEnd:
		off += v.size
	default:
		return 0, fmt.Errorf("view: bad whence %d", whence)
	}
	if off < 0 {
		return 0, errors.New("view: negative position")
	}
	v.pos = off
	return off, nil
}

func (v *view) Stat() (fs.FileInfo, error) { return nil, errors.New("view: Stat not supported") }
func (v *view) Close() error               { return nil }

// recorder captures the writes go-diskfs makes instead of doing them.
type recorder struct {
	view
	writes []write
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.size {
		return 0, fmt.Errorf("write of %d bytes at %d is outside the %d-byte disk", len(p), off, r.size)
	}
	r.writes = append(r.writes, write{off: off, data: slices.Clone(p)})
	return len(p), nil
}

// guidString formats a GPT mixed-endian GUID as a lower-case string.
func guidString(b [16]byte) string {
	var u uuid.UUID
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	copy(u[8:], b[8:])
	return u.String()
}
