package testimages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// DiskOptions describe a test disk.
type DiskOptions struct {
	Version string // version of the /usr image built into USR-A (unless Usr is set)
	Board   string // default DefaultBoard
	Size    int64  // disk size in bytes, a multiple of 1 MiB; default DefaultDiskSize
	Usr     string // optional: a /usr image file to place into USR-A instead of building one
	// Progress, when set, is called as the /usr image is built or copied.
	Progress func(done, total int64)
}

// BuildDisk writes a GPT disk image (sparse) with the Flatcar layout scaled to Size (see
// Layout) to path. USR-A (P=1, S=1) holds the /usr image: exactly the bytes BuildUsr
// writes for the same Version, Board and Size = SlotSize(disk size), or the file Usr.
// USR-B (P=0) and the other partitions are empty. GUIDs are fixed, so the same options give
// a byte-identical file.
func BuildDisk(ctx context.Context, path string, o DiskOptions) error {
	if o.Size == 0 {
		o.Size = DefaultDiskSize
	}
	parts, err := Layout(o.Size)
	if err != nil {
		return fmt.Errorf("build disk: %w", err)
	}
	usrA := parts[2]
	uo := UsrOptions{Version: o.Version, Board: o.Board, Size: usrA.Size, Progress: o.Progress}
	var usr *os.File
	var usrSize int64
	if o.Usr != "" {
		if usr, usrSize, err = openUsr(o.Usr, usrA); err != nil {
			return fmt.Errorf("build disk: %w", err)
		}
		defer usr.Close()
	} else if err := uo.check(); err != nil {
		return fmt.Errorf("build disk: %w", err)
	}
	return atomicfile.Write(path, 0o644, func(f *os.File) error {
		if err := f.Truncate(o.Size); err != nil {
			return err
		}
		if err := WriteTable(f, o.Size, parts); err != nil {
			return err
		}
		if usr == nil {
			return buildUsrAt(ctx, f, usrA.Start, uo)
		}
		return CopySparse(ctx, f, usrA.Start, usr, usrSize, o.Progress)
	})
}

// openUsr opens a /usr image for placing into slot, checking it is one and that it fits.
func openUsr(path string, slot Part) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("/usr image: %w", err)
	}
	st, err := f.Stat()
	if err == nil {
		err = (partition.Slot{Number: slot.Number, Label: slot.Label, Size: slot.Size}).Fits(st.Size())
	}
	if err == nil {
		_, err = ReadRelease(f, st.Size())
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("/usr image %s: %w", path, err)
	}
	return f, st.Size(), nil
}

// WriteTable writes a protective MBR and a GPT (disk GUID DiskGUID) holding parts to f, a
// disk of size bytes.
func WriteTable(f *os.File, size int64, parts []Part) error {
	t := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: DiskGUID}
	for _, p := range parts {
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: p.Number, Start: uint64(p.Start / 512), Size: uint64(p.Size),
			Type: gpt.Type(p.Type), Name: p.Label, GUID: p.GUID, Attributes: uint64(p.Attr),
		})
	}
	if err := t.Write(f, size); err != nil {
		return fmt.Errorf("write GPT: %w", err)
	}
	return nil
}

// CopySparse copies size bytes of src to dst at off, skipping all-zero 4 KiB blocks so that
// a sparse destination stays sparse (dst must be zero there, as a fresh file is).
func CopySparse(ctx context.Context, dst io.WriterAt, off int64, src io.ReaderAt, size int64, progress func(done, total int64)) error {
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), size-done)
		if _, err := src.ReadAt(buf[:n], done); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read /usr image at %d: %w", done, err)
		}
		for b := int64(0); b < n; b += blockSize {
			blk := buf[b:min(n, b+blockSize)]
			if allZero(blk) {
				continue
			}
			if _, err := dst.WriteAt(blk, off+done+b); err != nil {
				return fmt.Errorf("write at %d: %w", off+done+b, err)
			}
		}
		done += n
		if progress != nil {
			progress(done, size)
		}
	}
	return nil
}

// InstallRaw writes the /usr image file usrImage into the inactive slot of the disk and
// marks it to be tried on the next boot (PrepareInstall): a test stand-in for a payload
// install. An emulated disk does not know which slot is booted, so the slot kept is the
// proven one (successful, highest priority, lower number on ties) and the other is
// written: a pending or failed install is overwritten, a good slot never. Nothing is
// written when the image is not a /usr image or does not fit.
func InstallRaw(diskPath, usrImage string) (partition.Slot, error) {
	d, err := partition.Open(diskPath)
	if err != nil {
		return partition.Slot{}, err
	}
	defer d.Close()
	slots, err := d.Slots()
	if err != nil {
		return partition.Slot{}, err
	}
	target, err := d.Other(keeper(slots))
	if err != nil {
		return partition.Slot{}, fmt.Errorf("install: %w", err)
	}
	img, err := os.Open(usrImage)
	if err != nil {
		return partition.Slot{}, fmt.Errorf("install: %w", err)
	}
	defer img.Close()
	st, err := img.Stat()
	if err != nil {
		return partition.Slot{}, fmt.Errorf("install: %w", err)
	}
	if err := target.Fits(st.Size()); err != nil {
		return partition.Slot{}, fmt.Errorf("install %s: %w", usrImage, err)
	}
	if _, err := ReadRelease(img, st.Size()); err != nil {
		return partition.Slot{}, fmt.Errorf("install %s: %w", usrImage, err)
	}
	if err := d.BeginInstall(target); err != nil {
		return partition.Slot{}, fmt.Errorf("install: %w", err)
	}
	if err := rawCopy(d.SlotWriter(target), img, st.Size()); err != nil {
		return partition.Slot{}, fmt.Errorf("install %s into %v: %w", usrImage, target, err)
	}
	if err := d.Sync(); err != nil {
		return partition.Slot{}, err
	}
	if err := d.PrepareInstall(target); err != nil {
		return partition.Slot{}, err
	}
	return d.SlotByNumber(target.Number)
}

// keeper is the slot an emulated install must not overwrite: the committed slot (the rule
// payload apply uses on an image, partition.Committed), else the one that boots next.
func keeper(slots []partition.Slot) partition.Slot {
	if s, err := partition.Committed(slots); err == nil {
		return s
	}
	if s, _, err := partition.Next(slots); err == nil {
		return s
	}
	return slots[0]
}

// rawCopy copies size bytes of src to the start of dst, every byte (the slot may hold an
// older image whose blocks must not survive).
func rawCopy(dst io.WriterAt, src io.ReaderAt, size int64) error {
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; {
		n := min(int64(len(buf)), size-done)
		if _, err := src.ReadAt(buf[:n], done); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := dst.WriteAt(buf[:n], done); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Boot emulates one boot of the disk by GRUB: NextBoot chooses the slot and writes the
// decremented tries counter; the kernel command line GRUB would pass is written to
// CmdlinePath(diskPath) (so tools can tell which slot is "booted"), and the release is read
// from the chosen slot's filesystem, as the booted system would see /usr/lib/os-release.
func Boot(diskPath string) (partition.Slot, Release, error) {
	d, err := partition.Open(diskPath)
	if err != nil {
		return partition.Slot{}, Release{}, err
	}
	defer d.Close()
	s, err := d.NextBoot()
	if err != nil {
		return partition.Slot{}, Release{}, fmt.Errorf("boot %s: %w", diskPath, err)
	}
	if err := writeCmdline(diskPath, s); err != nil {
		return s, Release{}, fmt.Errorf("boot %s: %w", diskPath, err)
	}
	rel, err := ReadRelease(d.SlotReader(s), s.Size)
	if err != nil {
		return s, Release{}, fmt.Errorf("boot %s from %v: /usr does not mount: %w", diskPath, s, err)
	}
	return s, rel, nil
}

// CmdlinePath is where Boot writes the emulated kernel command line of a disk image's last
// boot (partition.CmdlinePath, where every host tool looks for it).
func CmdlinePath(diskPath string) string { return partition.CmdlinePath(diskPath) }

// writeCmdline writes what Flatcar's GRUB puts on the kernel command line for slot s.
func writeCmdline(diskPath string, s partition.Slot) error {
	kernel := "vmlinuz-b"
	if strings.EqualFold(s.PartUUID, GUIDUsrA) {
		kernel = "vmlinuz-a"
	}
	line := fmt.Sprintf("BOOT_IMAGE=/flatcar/%s mount.usr=PARTUUID=%s rootflags=rw mount.usrflags=ro\n", kernel, s.PartUUID)
	p := CmdlinePath(diskPath)
	return atomicfile.Write(p, 0o644, func(f *os.File) error {
		_, err := f.WriteString(line)
		return err
	})
}
