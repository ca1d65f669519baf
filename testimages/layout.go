package testimages

import (
	"fmt"

	"github.com/twinslot/twinslot/partition"
)

// Sizes and defaults of the images.
const (
	MiB = 1 << 20
	GiB = 1 << 30

	// DefaultDiskSize is the size of a disk built without a size.
	DefaultDiskSize = 512 * MiB
	// MinDiskSize is the smallest disk BuildDisk makes (slots of 21 MiB).
	MinDiskSize = 64 * MiB
	// DefaultUsrSize is the size of a /usr image built without a size: the slot size of a
	// DefaultDiskSize disk, so such an image installs into such a disk.
	DefaultUsrSize = 170 * MiB
	// MinUsrSize is the smallest /usr filesystem BuildUsr makes.
	MinUsrSize = 8 * MiB
	// DefaultBoard is the board of images built without one.
	DefaultBoard = "amd64-usr"

	align = MiB // every partition starts and ends on a 1 MiB boundary
)

// Part describes one partition of the test disk layout.
type Part struct {
	Number int
	Label  string
	Type   string // GPT type GUID
	GUID   string // unique partition GUID (fixed, so images are reproducible)
	Start  int64  // bytes
	Size   int64  // bytes
	Attr   partition.Attributes
}

// Flatcar partition type GUIDs (as Flatcar's disk layout and cgpt define them).
const (
	// TypeEFI is the EFI system partition; TypeRoot is flatcar-resize, the type of ROOT.
	TypeEFI      = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	typeBIOS     = "21686148-6449-6E6F-744E-656564454649"
	TypeRoot     = "3884DD41-8582-4404-B9A8-E9B84F2DF50E" // flatcar-resize (ROOT)
	typeReserved = "C95DC21A-DF0E-4340-8D7B-26CBFA9A03E0" // flatcar-reserved (OEM-CONFIG)
	typeData     = "0FC63DAF-8483-4772-8E79-3D69D8477DE4" // linux-data (OEM)

	// DiskGUID is the disk GUID of every test disk.
	DiskGUID = "B1A7C0DE-0000-4000-8000-000000000001"
	// GUIDUsrA and GUIDUsrB are Flatcar's unique partition GUIDs of USR-A and USR-B.
	GUIDUsrA = "7130C94A-213A-4E5A-8E26-6CCE9662F132"
	GUIDUsrB = "E03DD35C-7C2D-4A47-B3FE-27F15780A57C"
	// GUIDESP and GUIDRoot are the unique partition GUIDs of EFI-SYSTEM and ROOT.
	GUIDESP  = "B1A7C0DE-0001-4000-8000-000000000001"
	GUIDRoot = "B1A7C0DE-0009-4000-8000-000000000009"
)

// SlotSize is the size of USR-A and USR-B on a disk of diskSize bytes: a third of the disk,
// rounded down to 1 MiB (170 MiB on the default 512 MiB disk, 2 GiB on a 6 GiB disk).
func SlotSize(diskSize int64) int64 {
	return diskSize / 3 / align * align
}

// Layout is the Flatcar partition layout scaled to a disk of size bytes:
//
//	#  label       type              size
//	1  EFI-SYSTEM  efi               size/32 (≥ 1 MiB)
//	2  BIOS-BOOT   bios              1 MiB
//	3  USR-A       flatcar-usr       SlotSize(size), P=1 S=1
//	4  USR-B       flatcar-usr       SlotSize(size), P=0
//	5  ROOT-C      flatcar-reserved  1 MiB (see below)
//	6  OEM         linux-data        size/32 (≥ 1 MiB)
//	7  OEM-CONFIG  flatcar-reserved  size/128 (≥ 1 MiB)
//	9  ROOT        flatcar-resize    the rest
//
// Everything is aligned to 1 MiB; the first and last MiB hold the GPT. Entry 8 is unused,
// as in Flatcar. Flatcar's ROOT-C is a placeholder of 0 blocks and type "blank", which a GPT
// cannot hold (an entry spans at least one sector, and a zero type GUID marks the entry
// unused); here it is a visible 1 MiB entry of the reserved type, so it is never a slot.
func Layout(size int64) ([]Part, error) {
	if size < MinDiskSize {
		return nil, fmt.Errorf("disk size %d is below the minimum %d (64 MiB)", size, int64(MinDiskSize))
	}
	if size%align != 0 {
		return nil, fmt.Errorf("disk size %d is not a multiple of 1 MiB", size)
	}
	atLeast := func(n int64) int64 { return max(align, n/align*align) }
	slot := SlotSize(size)
	parts := []Part{
		{Number: 1, Label: "EFI-SYSTEM", Type: TypeEFI, GUID: GUIDESP, Size: atLeast(size / 32)},
		{Number: 2, Label: "BIOS-BOOT", Type: typeBIOS, GUID: "B1A7C0DE-0002-4000-8000-000000000002", Size: align},
		{Number: 3, Label: "USR-A", Type: partition.TypeUSR, GUID: GUIDUsrA, Size: slot,
			Attr: partition.Attributes(0).WithPriority(1).WithSuccessful(true)},
		{Number: 4, Label: "USR-B", Type: partition.TypeUSR, GUID: GUIDUsrB, Size: slot},
		{Number: 5, Label: "ROOT-C", Type: typeReserved, GUID: "D82521B4-07AC-4F1C-8840-DDEFEDC332F3", Size: align},
		{Number: 6, Label: "OEM", Type: typeData, GUID: "B1A7C0DE-0006-4000-8000-000000000006", Size: atLeast(size / 32)},
		{Number: 7, Label: "OEM-CONFIG", Type: typeReserved, GUID: "B1A7C0DE-0007-4000-8000-000000000007", Size: atLeast(size / 128)},
		{Number: 9, Label: "ROOT", Type: TypeRoot, GUID: GUIDRoot},
	}
	off := int64(align)
	for i := range parts {
		parts[i].Start = off
		off += parts[i].Size
	}
	root := &parts[len(parts)-1]
	root.Size = size - align - root.Start
	if root.Size < align {
		return nil, fmt.Errorf("disk size %d leaves no room for ROOT", size)
	}
	return parts, nil
}
