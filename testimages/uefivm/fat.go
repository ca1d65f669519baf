package uefivm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

// Sizes of FAT images and ESP disks.
const (
	MinFATSize = 1 << 20
	// FAT32Size is the size from which WriteFAT makes FAT32 (UEFI's ESP file system);
	// smaller images get what mkfs.vfat picks (FAT12/16, which OVMF reads as well).
	FAT32Size = 64 << 20
	espAlign  = 1 << 20
	copyBlock = 64 << 10
	// TypeESP is the GPT type GUID of an EFI system partition.
	TypeESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
)

// Fixed GUIDs and volume ID, so the same files give the same image.
const (
	espDiskGUID = "E5B00000-0000-4000-8000-000000000000"
	espPartGUID = "E5B00000-0001-4000-8000-000000000001"
	fatVolumeID = "7a15b007"
)

// WriteFAT writes a FAT file system image of size bytes (sparse, no partition table) to
// path, holding files: destination path inside the image ("EFI/BOOT/BOOTX64.EFI") → source
// file on the host. Directories are created as needed. It uses mkfs.vfat (dosfstools) and
// mmd/mcopy (mtools), never a mount. The file appears at out only when complete.
func WriteFAT(ctx context.Context, out string, size int64, files map[string]string) error {
	if size < MinFATSize || size%512 != 0 {
		return fmt.Errorf("uefivm: FAT image size %d: want a multiple of 512 bytes, at least %d", size, MinFATSize)
	}
	for _, tool := range []struct{ cmd, pkg string }{{"mkfs.vfat", "dosfstools"}, {"mcopy", "mtools"}, {"mmd", "mtools"}} {
		if _, err := exec.LookPath(tool.cmd); err != nil {
			return &MissingError{What: tool.cmd, Package: tool.pkg}
		}
	}
	srcOf := make(map[string]string, len(files)) // clean destination → source
	dests := make([]string, 0, len(files))
	for dest, src := range files {
		clean := path.Clean(strings.TrimPrefix(dest, "/"))
		if clean != strings.TrimPrefix(dest, "/") || clean == "." || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("uefivm: FAT destination %q: want a clean relative path such as EFI/BOOT/BOOTX64.EFI", dest)
		}
		if st, err := os.Stat(src); err != nil {
			return fmt.Errorf("uefivm: FAT source for %s: %w", dest, err)
		} else if !st.Mode().IsRegular() {
			return fmt.Errorf("uefivm: FAT source %s for %s is not a regular file", src, dest)
		}
		if _, dup := srcOf[clean]; dup {
			return fmt.Errorf("uefivm: FAT destination %q given twice", clean)
		}
		srcOf[clean] = src
		dests = append(dests, clean)
	}
	slices.Sort(dests)

	return atomicfile.Write(out, 0o644, func(tmp *os.File) error {
		name := tmp.Name()
		if err := tmp.Truncate(size); err != nil {
			return fmt.Errorf("uefivm: %w", err)
		}
		mkfs := []string{"-i", fatVolumeID, "-n", "EFI", name}
		if size >= FAT32Size {
			mkfs = append([]string{"-F", "32"}, mkfs...)
		}
		if err := run(ctx, "mkfs.vfat", mkfs...); err != nil {
			return err
		}
		made := map[string]bool{}
		for _, dest := range dests {
			var dirs []string
			for d := path.Dir(dest); d != "."; d = path.Dir(d) {
				dirs = append(dirs, d)
			}
			slices.Reverse(dirs)
			for _, d := range dirs {
				if made[d] {
					continue
				}
				if err := run(ctx, "mmd", "-i", name, "::/"+d); err != nil {
					return err
				}
				made[d] = true
			}
			if err := run(ctx, "mcopy", "-i", name, "-o", srcOf[dest], "::/"+dest); err != nil {
				return err
			}
		}
		return nil
	})
}

// WriteESPDisk writes a GPT disk image of size bytes (sparse) to out with one partition, an
// EFI system partition from 1 MiB to 1 MiB before the end, holding a FAT file system with
// files (as WriteFAT). Booted as Disks[0], OVMF starts its /EFI/BOOT/BOOTX64.EFI.
func WriteESPDisk(ctx context.Context, out string, size int64, files map[string]string) error {
	if size < 2*espAlign+MinFATSize || size%espAlign != 0 {
		return fmt.Errorf("uefivm: ESP disk size %d: want a multiple of 1 MiB, at least 3 MiB", size)
	}
	fatSize := size - 2*espAlign
	fat := out + ".fat"
	defer os.Remove(fat)
	if err := WriteFAT(ctx, fat, fatSize, files); err != nil {
		return err
	}
	src, err := os.Open(fat)
	if err != nil {
		return fmt.Errorf("uefivm: %w", err)
	}
	defer src.Close()

	return atomicfile.Write(out, 0o644, func(tmp *os.File) error {
		if err := tmp.Truncate(size); err != nil {
			return fmt.Errorf("uefivm: %w", err)
		}
		t := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, GUID: espDiskGUID,
			Partitions: []*gpt.Partition{{Index: 1, Start: espAlign / 512, Size: uint64(fatSize),
				Type: gpt.EFISystemPartition, Name: "EFI-SYSTEM", GUID: espPartGUID}}}
		if err := t.Write(tmp, size); err != nil {
			return fmt.Errorf("uefivm: write GPT: %w", err)
		}
		return copySparse(ctx, tmp, espAlign, src, fatSize)
	})
}

// copySparse copies n bytes of src to dst at off, skipping all-zero blocks.
func copySparse(ctx context.Context, dst io.WriterAt, off int64, src io.ReaderAt, n int64) error {
	buf := make([]byte, copyBlock)
	zero := make([]byte, copyBlock)
	for done := int64(0); done < n; done += copyBlock {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(copyBlock, n-done)]
		if _, err := src.ReadAt(b, done); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("uefivm: read FAT image: %w", err)
		}
		if bytes.Equal(b, zero[:len(b)]) {
			continue
		}
		if _, err := dst.WriteAt(b, off+done); err != nil {
			return fmt.Errorf("uefivm: write ESP: %w", err)
		}
	}
	return nil
}

// run runs a tool, with its output in the error when it fails. mtools is told not to
// check the image's geometry (a plain file has none).
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("uefivm: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
