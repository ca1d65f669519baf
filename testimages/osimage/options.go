package osimage

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/osrelease"
	"github.com/twinslot/twinslot/testimages"
)

// Defaults and limits of an OS image.
const (
	DefaultDiskSize = 3 * testimages.GiB
	DefaultSlotSize = 1 * testimages.GiB
	DefaultBuildID  = "1"
	ESPSize         = 256 * testimages.MiB // FAT32: two kernels, two initrds and a temp copy
	MinRootSize     = 256 * testimages.MiB
	MinSlotSize     = 64 * testimages.MiB
	maxFiller       = 4 * testimages.GiB
	align           = testimages.MiB
)

// Binaries are the twinslot programs an image carries in /usr/bin; Options.Bin holds them.
func Binaries() []string { return []string{"updated", "updatectl", "locksmithd", "locksmithctl"} }

// Options describe one build of the OS image.
type Options struct {
	OutDir      string // where usr.img, vmlinuz, initrd.img and disk.img go (created)
	Version     string // VERSION= of /usr/lib/os-release (required)
	BuildID     string // BUILD_ID=; default DefaultBuildID
	Board       string // BOARD=; default testimages.DefaultBoard
	Marker      string // written to /run/twinslot/initrd-marker at boot; default Version-BuildID
	Bin         string // directory holding Binaries() (required)
	GrubEFI     string // the GRUB EFI image for ESP:/EFI/BOOT/BOOTX64.EFI (required unless UsrOnly)
	Trust       string // optional trust root for /usr/share/twinslot/trust.json
	RootOverlay string // optional tree copied into ROOT last
	Broken      bool   // the image fails its health gate at boot
	UsrOnly     bool   // build usr.img, vmlinuz and initrd.img only
	Filler      int64  // bytes of version-seeded incompressible data in /usr/share/twinslot/filler
	DiskSize    int64  // default DefaultDiskSize
	SlotSize    int64  // size of USR-A and USR-B; default DefaultSlotSize
	Cache       string // cache root (required): the bootstrap lives in Cache/os/<key>/
	Log         io.Writer
}

// UsageError is a bad option: nothing was built. Its message says what to change.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error { return &UsageError{Msg: fmt.Sprintf(format, args...)} }

// check fills in defaults and validates o without building anything.
func (o *Options) check() error {
	if o.BuildID == "" {
		o.BuildID = DefaultBuildID
	}
	if o.Board == "" {
		o.Board = testimages.DefaultBoard
	}
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDiskSize
	}
	if o.SlotSize == 0 {
		o.SlotSize = DefaultSlotSize
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.OutDir == "" {
		return usagef("an output directory is required (-o)")
	}
	if o.Cache == "" {
		return usagef("a cache directory is required (--cache, or TWINSLOT_CACHE / $HOME)")
	}
	for _, f := range []struct{ name, v string }{{"version", o.Version}, {"build id", o.BuildID}, {"board", o.Board}} {
		if err := osrelease.CheckField(f.name, f.v); err != nil {
			return usagef("%v", err)
		}
	}
	if o.Marker == "" {
		o.Marker = o.Version + "-" + o.BuildID
	}
	if err := osrelease.CheckField("marker", o.Marker); err != nil {
		return usagef("%v", err)
	}
	if o.Filler < 0 || o.Filler > maxFiller {
		return usagef("filler %d is outside 0..%d bytes", o.Filler, int64(maxFiller))
	}
	if o.Bin == "" {
		return usagef("--bin DIR with %v is required", Binaries())
	}
	for _, b := range Binaries() {
		if err := regularFile(filepath.Join(o.Bin, b)); err != nil {
			return usagef("--bin: %v (run make build and pass bin/)", err)
		}
	}
	if o.Trust != "" {
		if err := regularFile(o.Trust); err != nil {
			return usagef("--trust: %v", err)
		}
	}
	if o.UsrOnly {
		return nil
	}
	if o.GrubEFI == "" {
		return usagef("--grub-efi BOOTX64.EFI is required for a disk image (or --usr-only)")
	}
	if err := regularFile(o.GrubEFI); err != nil {
		return usagef("--grub-efi: %v", err)
	}
	if o.RootOverlay != "" {
		if st, err := os.Stat(o.RootOverlay); err != nil || !st.IsDir() {
			return usagef("--root-overlay %s is not a directory", o.RootOverlay)
		}
	}
	_, err := DiskLayout(o.DiskSize, o.SlotSize)
	return err
}

func regularFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

// DiskLayout is the partition table of an OS disk of diskSize bytes with /usr slots of
// slotSize bytes, numbered as Flatcar numbers them:
//
//	#  label       type         size
//	1  EFI-SYSTEM  efi          ESPSize (FAT32)
//	3  USR-A       flatcar-usr  slotSize, P=1 S=1 (the first version)
//	4  USR-B       flatcar-usr  slotSize, P=0 (empty)
//	9  ROOT        flatcar-resize  the rest (ext4: /etc, /var, /home, /root)
//
// The first and last MiB hold the GPT; everything is aligned to 1 MiB. The unique GUIDs are
// those of testimages (Flatcar's USR-A/USR-B GUIDs).
func DiskLayout(diskSize, slotSize int64) ([]testimages.Part, error) {
	switch {
	case diskSize%align != 0 || slotSize%align != 0:
		return nil, usagef("disk size %d and slot size %d must be multiples of 1 MiB", diskSize, slotSize)
	case slotSize < MinSlotSize:
		return nil, usagef("slot size %d is below the minimum %d (64 MiB)", slotSize, int64(MinSlotSize))
	}
	parts := []testimages.Part{
		{Number: 1, Label: "EFI-SYSTEM", Type: testimages.TypeEFI, GUID: testimages.GUIDESP, Size: ESPSize},
		{Number: 3, Label: "USR-A", Type: partition.TypeUSR, GUID: testimages.GUIDUsrA, Size: slotSize,
			Attr: partition.Attributes(0).WithPriority(1).WithSuccessful(true)},
		{Number: 4, Label: "USR-B", Type: partition.TypeUSR, GUID: testimages.GUIDUsrB, Size: slotSize},
		{Number: 9, Label: "ROOT", Type: testimages.TypeRoot, GUID: testimages.GUIDRoot},
	}
	off := int64(align)
	for i := range parts {
		parts[i].Start = off
		off += parts[i].Size
	}
	root := &parts[len(parts)-1]
	root.Size = diskSize - align - root.Start
	if root.Size < MinRootSize {
		return nil, usagef("disk size %d leaves %d bytes for ROOT, less than %d (256 MiB): use a larger --disk-size or a smaller --slot-size",
			diskSize, max(root.Size, 0), int64(MinRootSize))
	}
	return parts, nil
}

// ErrTooBig: the /usr tree does not fit the slot.
var ErrTooBig = errors.New("the /usr tree does not fit the slot")
