package gptpriotest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/twinslot/twinslot/partition"
)

// Version is the table format this package reads.
const Version = 1

// Disk geometry of the case disks: 512-byte sectors unless a case asks for 4096.
const (
	DiskSize     = 4 << 20
	SectorSize   = 512
	SectorSize4K = 4096
	unit         = 512 << 10 // partition size and alignment
	maxTable     = 1 << 20   // a larger table file is refused
)

// Damage kinds a case may apply to its disk.
const (
	DamageNone          = ""
	DamagePrimaryHeader = "primary-header"
	DamageBackupEntries = "backup-entries"
	DamageBoth          = "both"
)

// Slot is one /usr partition of a case disk.
type Slot struct {
	Number int
	Label  string
	GUID   string // unique partition GUID, upper case as written
}

// Slots are the /usr partitions of case disks, in table order; a case uses the first two
// or all three.
func Slots() []Slot {
	return []Slot{
		{Number: 3, Label: "USR-A", GUID: "7130C94A-213A-4E5A-8E26-6CCE9662F132"},
		{Number: 4, Label: "USR-B", GUID: "E03DD35C-7C2D-4A47-B3FE-27F15780A57C"},
		{Number: 5, Label: "USR-C", GUID: "C0C0C0C0-0005-4000-8000-000000000005"},
	}
}

// Case is one row of the table (see the package documentation).
type Case struct {
	Name   string   `json:"name"`
	About  string   `json:"about"`
	Slots  []string `json:"slots"`
	Damage string   `json:"damage,omitempty"`
	// SectorSize is the logical sector size of the case disk: 0 (512) or 4096.
	SectorSize int  `json:"sector_size,omitempty"`
	Want       Want `json:"want"`
}

// Sector is the case disk's logical sector size in bytes.
func (c Case) Sector() int {
	if c.SectorSize == 0 {
		return SectorSize
	}
	return c.SectorSize
}

// Want is what a boot of the case's disk must do.
type Want struct {
	Boot  string   `json:"boot"`  // label of the slot chosen; "" = none eligible
	Slots []string `json:"slots"` // attribute words after the boot
}

type file struct {
	Version int    `json:"version"`
	Cases   []Case `json:"cases"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Load reads and checks the table at path.
func Load(path string) ([]Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gptprio cases: %w", err)
	}
	if len(b) > maxTable {
		return nil, fmt.Errorf("gptprio cases %s: %d bytes, more than the %d allowed", path, len(b), maxTable)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("gptprio cases %s: %w", path, err)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("gptprio cases %s: version %d, this code reads version %d", path, f.Version, Version)
	}
	seen := map[string]bool{}
	for _, c := range f.Cases {
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("gptprio cases %s: %w", path, err)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("gptprio cases %s: case %q appears twice", path, c.Name)
		}
		seen[c.Name] = true
	}
	if len(f.Cases) == 0 {
		return nil, fmt.Errorf("gptprio cases %s: no cases", path)
	}
	return f.Cases, nil
}

func (c Case) check() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("case name %q: use lower-case letters, digits and dashes", c.Name)
	}
	if n := len(c.Slots); n < 2 || n > len(Slots()) {
		return fmt.Errorf("case %s: %d slots, want 2 or 3", c.Name, n)
	}
	if len(c.Want.Slots) != len(c.Slots) {
		return fmt.Errorf("case %s: %d slots before but %d after", c.Name, len(c.Slots), len(c.Want.Slots))
	}
	for _, s := range append(append([]string(nil), c.Slots...), c.Want.Slots...) {
		if _, err := ParseAttributes(s); err != nil {
			return fmt.Errorf("case %s: %w", c.Name, err)
		}
	}
	if s := c.Sector(); s != SectorSize && s != SectorSize4K {
		return fmt.Errorf("case %s: sector_size %d, want 512 or 4096", c.Name, s)
	}
	switch c.Damage {
	case DamageNone, DamagePrimaryHeader, DamageBackupEntries, DamageBoth:
	default:
		return fmt.Errorf("case %s: unknown damage %q", c.Name, c.Damage)
	}
	if c.Want.Boot != "" {
		if _, ok := c.WantSlot(); !ok {
			return fmt.Errorf("case %s: want.boot %q is not one of its slots", c.Name, c.Want.Boot)
		}
	}
	return nil
}

// WantSlot is the slot that must boot, false when none may.
func (c Case) WantSlot() (Slot, bool) {
	for _, s := range Slots()[:len(c.Slots)] {
		if s.Label == c.Want.Boot {
			return s, true
		}
	}
	return Slot{}, false
}

// Writes reports whether booting the case changes the disk: a slot boots and its tries
// counter drops.
func (c Case) Writes() bool {
	for i, s := range c.Slots {
		if s != c.Want.Slots[i] {
			return true
		}
	}
	return false
}

// ParseAttributes reads an attribute word as partition.Attributes.String prints it:
// "P=2 T=1 S=0", optionally followed by " other=0x…" (bits outside the gptprio fields).
func ParseAttributes(s string) (partition.Attributes, error) {
	f := strings.Fields(s)
	if len(f) != 3 && len(f) != 4 {
		return 0, fmt.Errorf("attributes %q: want \"P=n T=n S=0|1\" and optionally \"other=0x…\"", s)
	}
	num := func(field, key string, max uint64) (uint64, error) {
		v, ok := strings.CutPrefix(field, key+"=")
		if !ok {
			return 0, fmt.Errorf("attributes %q: %q should start with %s=", s, field, key)
		}
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil || n > max {
			return 0, fmt.Errorf("attributes %q: %s=%s is not a number from 0 to %d", s, key, v, max)
		}
		return n, nil
	}
	p, err := num(f[0], "P", partition.MaxPriority)
	if err != nil {
		return 0, err
	}
	t, err := num(f[1], "T", partition.MaxTries)
	if err != nil {
		return 0, err
	}
	ok, err := num(f[2], "S", 1)
	if err != nil {
		return 0, err
	}
	var other uint64
	if len(f) == 4 {
		if other, err = num(f[3], "other", ^uint64(0)); err != nil {
			return 0, err
		}
	}
	a := partition.Attributes(other).WithPriority(int(p)).WithTries(int(t)).WithSuccessful(ok == 1)
	if a.String() != s {
		return 0, fmt.Errorf("attributes %q: not in canonical form (%q); other= may hold only bits outside the gptprio fields", s, a.String())
	}
	return a, nil
}

// WriteDisk writes the case's disk image to path (see the package documentation).
func (c Case) WriteDisk(path string) error {
	if err := c.check(); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	defer f.Close()
	if err := f.Truncate(DiskSize); err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	ss := c.Sector()
	lba := func(n int) uint64 { return uint64(n * unit / ss) }
	parts := []*gpt.Partition{{Index: 1, Start: lba(2), Size: unit, Type: gpt.EFISystemPartition,
		Name: "EFI-SYSTEM", GUID: "C0C0C0C0-0001-4000-8000-000000000001"}}
	for i, s := range Slots()[:len(c.Slots)] {
		a, _ := ParseAttributes(c.Slots[i])
		parts = append(parts, &gpt.Partition{Index: s.Number, Start: lba(3 + i), Size: unit,
			Type: gpt.Type(partition.TypeUSR), Name: s.Label, GUID: s.GUID, Attributes: uint64(a)})
	}
	parts = append(parts, &gpt.Partition{Index: 9, Start: lba(6), Size: unit,
		Type: gpt.Type("3884DD41-8582-4404-B9A8-E9B84F2DF50E"), Name: "ROOT",
		GUID: "C0C0C0C0-0009-4000-8000-000000000009", Attributes: 1<<2 | 1<<63})
	t := &gpt.Table{LogicalSectorSize: ss, PhysicalSectorSize: ss, ProtectiveMBR: true,
		GUID: "C0C0C0C0-0000-4000-8000-000000000000", Partitions: parts}
	if err := t.Write(f, DiskSize); err != nil {
		return fmt.Errorf("case %s: write GPT: %w", c.Name, err)
	}
	if err := damage(f, c.Damage, int64(ss)); err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	return f.Close()
}

// damage flips one byte: of the primary header's disk GUID (its CRC then fails) and/or of
// the backup array's first entry name (the array CRC then fails).
func damage(f *os.File, kind string, ss int64) error {
	flip := func(off int64) error {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		_, err := f.WriteAt(b, off)
		return err
	}
	if kind == DamagePrimaryHeader || kind == DamageBoth {
		if err := flip(ss + 56); err != nil {
			return fmt.Errorf("damage primary header: %w", err)
		}
	}
	if kind == DamageBackupEntries || kind == DamageBoth {
		hdr := make([]byte, ss)
		if _, err := f.ReadAt(hdr, DiskSize-ss); err != nil {
			return fmt.Errorf("damage backup entries: %w", err)
		}
		entries := int64(binary.LittleEndian.Uint64(hdr[72:80]))
		if err := flip(entries*ss + 56); err != nil {
			return fmt.Errorf("damage backup entries: %w", err)
		}
	}
	return nil
}

// Check compares the disk at path, after a boot, with the case; before is the image as
// WriteDisk made it.
func (c Case) Check(path string, before []byte) error {
	after, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	if !c.Writes() {
		if !bytes.Equal(before, after) {
			return fmt.Errorf("case %s: the disk changed, but nothing may be written (%s)", c.Name, firstDiff(before, after, c.Sector()))
		}
		return nil
	}
	d, err := partition.Open(path, partition.ReadOnly(), partition.SectorSize(c.Sector()))
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	defer d.Close()
	h, err := d.Health()
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	if h.PrimaryErr != nil || h.BackupErr != nil || !h.InSync {
		return fmt.Errorf("case %s: after the write both GPT copies must be valid and equal: primary %v, backup %v, in sync %v",
			c.Name, h.PrimaryErr, h.BackupErr, h.InSync)
	}
	slots, err := d.Slots()
	if err != nil {
		return fmt.Errorf("case %s: %w", c.Name, err)
	}
	var errs []error
	for i, s := range Slots()[:len(c.Slots)] {
		got := "missing"
		for _, ds := range slots {
			if ds.Number == s.Number {
				got = ds.Attr.String()
			}
		}
		if got != c.Want.Slots[i] {
			errs = append(errs, fmt.Errorf("case %s: %s after the boot is %s, want %s", c.Name, s.Label, got, c.Want.Slots[i]))
		}
	}
	return errors.Join(errs...)
}

func firstDiff(a, b []byte, ss int) string {
	if len(a) != len(b) {
		return fmt.Sprintf("size %d became %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (LBA %d)", i, i/ss)
		}
	}
	return "no difference"
}
