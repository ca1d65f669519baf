package slotrelease

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// This file is a small read-only ext4 reader for whole files of a slot (the kernel and initrd
// that an install copies to the ESP). go-diskfs v1.9.4 reads dense files correctly, but not
// files with holes: mkfs.ext4 -d (e2fsprogs 1.47) leaves every all-zero block of a source file
// unallocated, and go-diskfs then returns wrong bytes or panics (makeslice: len out of range).
// This reader follows the extent tree itself, reads holes and unwritten extents as zeros, and
// bounds every number it takes from the slot.

// Limits of the file reader.
const (
	maxExtentDepth = 5       // the kernel's own limit for a 4 KiB-block filesystem is 5
	maxPathDepth   = 16      // path components
	maxDirSize     = 8 << 20 // a directory larger than this is not a /usr directory we look in
	maxExtents     = 1 << 16 // extents of one file
	rootInode      = 2
	extentMagic    = 0xF30A
	flagExtents    = 0x80000
	flagInlineData = 0x10000000
	modeTypeMask   = 0xF000
	modeDir        = 0x4000
	modeRegular    = 0x8000
	uninitLen      = 32768 // ee_len above this marks an unwritten extent (reads as zeros)
)

// ErrFileTooLarge: the file is larger than the limit the caller gave Open.
var ErrFileTooLarge = errors.New("file larger than the limit")

// File is a regular file of a slot's ext4 filesystem, open for reading. It reads through the
// io.ReaderAt given to Open and holds no other resource.
type File struct {
	r       io.ReaderAt
	bs      int64
	size    int64
	extents []extent // sorted by logical block, not overlapping
	off     int64    // for Read
}

type extent struct {
	logical   int64 // first file block
	n         int64 // blocks
	physical  int64 // first filesystem block
	unwritten bool
}

// Size is the file's length in bytes.
func (f *File) Size() int64 { return f.size }

// Read reads the file sequentially.
func (f *File) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// ReadAt reads len(p) bytes at off; holes and unwritten extents read as zeros.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= f.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), f.size-off)
	done := int64(0)
	for done < want {
		pos := off + done
		blk := pos / f.bs
		in := pos % f.bs
		// The extent holding blk, or the first one after it.
		i, _ := slices.BinarySearchFunc(f.extents, blk, func(e extent, b int64) int {
			switch {
			case e.logical+e.n <= b:
				return -1
			case e.logical > b:
				return 1
			}
			return 0
		})
		var chunk int64
		if i < len(f.extents) && f.extents[i].logical <= blk {
			e := f.extents[i]
			chunk = min(want-done, (e.logical+e.n)*f.bs-pos)
			dst := p[done : done+chunk]
			if e.unwritten {
				clear(dst)
			} else if _, err := f.r.ReadAt(dst, (e.physical+blk-e.logical)*f.bs+in); err != nil {
				return int(done), fmt.Errorf("read file block %d: %w", blk, err)
			}
		} else {
			end := f.size // a hole up to the next extent or the end of the file
			if i < len(f.extents) {
				end = min(end, f.extents[i].logical*f.bs)
			}
			chunk = min(want-done, end-pos)
			clear(p[done : done+chunk])
		}
		done += chunk
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

// Open opens the regular file name (a slash-separated path from the filesystem root, such as
// "boot/vmlinuz") of the ext4 /usr filesystem at the start of r, which holds size bytes. A file
// larger than limit is refused with an error wrapping ErrFileTooLarge; a missing file with one
// wrapping fs.ErrNotExist; no ext4 filesystem with one wrapping ErrNoRelease. Every block
// number read from the slot is checked against the filesystem size, and a panic becomes an
// error, so a corrupt slot yields an error and nothing else.
func Open(r io.ReaderAt, size int64, name string, limit int64) (f *File, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, err = nil, fmt.Errorf("%w: corrupt filesystem (%v)", ErrNoRelease, p)
		}
	}()
	v, err := newVolume(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoRelease, err)
	}
	parts := strings.Split(path.Clean(strings.TrimPrefix(name, "/")), "/")
	if len(parts) > maxPathDepth || !fs.ValidPath(path.Join(parts...)) || parts[0] == "." {
		return nil, fmt.Errorf("open %q: not a file path", name)
	}
	ino := uint32(rootInode)
	for i, part := range parts {
		dir, mode, err := v.file(ino, maxDirSize)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
		if mode&modeTypeMask != modeDir {
			return nil, fmt.Errorf("open %s: %s is not a directory: %w", name, path.Join(parts[:i]...), fs.ErrNotExist)
		}
		if ino, err = v.lookup(dir, part); err != nil {
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
	}
	file, mode, err := v.file(ino, limit)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if mode&modeTypeMask != modeRegular {
		return nil, fmt.Errorf("open %s: not a regular file (mode %#o)", name, mode)
	}
	return file, nil
}

// volume is the geometry of an ext4 filesystem.
type volume struct {
	r         io.ReaderAt
	bs        int64
	blocks    int64
	inodes    int64
	ipg       int64
	inodeSize int64
	descSize  int64
	descStart int64 // byte offset of the group descriptor table
	groups    int64
}

func newVolume(r io.ReaderAt, size int64) (*volume, error) {
	if err := checkSuperblock(r, size); err != nil {
		return nil, err
	}
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("read superblock: %w", err)
	}
	le32 := func(off int) int64 { return int64(binary.LittleEndian.Uint32(sb[off:])) }
	le16 := func(off int) int64 { return int64(binary.LittleEndian.Uint16(sb[off:])) }
	v := &volume{r: r, bs: 1024 << le32(0x18), blocks: le32(0x04), inodes: le32(0x00),
		ipg: le32(0x28), inodeSize: le16(0x58), descSize: 32}
	if le32(0x60)&incompat64Bit != 0 {
		v.blocks |= le32(0x150) << 32
		v.descSize = le16(0xFE)
		if v.descSize < 64 || v.descSize > 1024 || v.descSize&(v.descSize-1) != 0 {
			return nil, fmt.Errorf("group descriptor size %d", v.descSize)
		}
	}
	bpg := le32(0x20)
	first := le32(0x14)
	if first > 1 {
		return nil, fmt.Errorf("first data block %d", first)
	}
	v.groups = (v.blocks - first + bpg - 1) / bpg
	v.descStart = (first + 1) * v.bs
	if v.inodes == 0 || v.inodes > v.groups*v.ipg {
		return nil, fmt.Errorf("%d inodes in %d groups of %d", v.inodes, v.groups, v.ipg)
	}
	return v, nil
}

// read reads n bytes at filesystem block blk (plus off), checking the range lies inside the
// filesystem.
func (v *volume) read(blk, off, n int64) ([]byte, error) {
	if blk < 0 || blk >= v.blocks || off < 0 || n < 0 || blk*v.bs+off+n > v.blocks*v.bs {
		return nil, fmt.Errorf("block %d (+%d, %d bytes) is outside the %d-block filesystem", blk, off, n, v.blocks)
	}
	b := make([]byte, n)
	if _, err := v.r.ReadAt(b, blk*v.bs+off); err != nil {
		return nil, fmt.Errorf("read block %d: %w", blk, err)
	}
	return b, nil
}

// inode reads inode ino.
func (v *volume) inode(ino uint32) ([]byte, error) {
	if ino == 0 || int64(ino) > v.inodes {
		return nil, fmt.Errorf("inode %d out of range", ino)
	}
	g, idx := (int64(ino)-1)/v.ipg, (int64(ino)-1)%v.ipg
	d, err := v.read(0, v.descStart+g*v.descSize, v.descSize)
	if err != nil {
		return nil, fmt.Errorf("group descriptor %d: %w", g, err)
	}
	table := int64(binary.LittleEndian.Uint32(d[0x08:]))
	if v.descSize >= 64 {
		table |= int64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	return v.read(table, idx*v.inodeSize, min(v.inodeSize, 256))
}

// file opens inode ino, refusing more than limit bytes; it returns the file and its mode.
func (v *volume) file(ino uint32, limit int64) (*File, uint16, error) {
	in, err := v.inode(ino)
	if err != nil {
		return nil, 0, err
	}
	mode := binary.LittleEndian.Uint16(in[0x00:])
	size := int64(binary.LittleEndian.Uint32(in[0x04:])) | int64(binary.LittleEndian.Uint32(in[0x6C:]))<<32
	flags := binary.LittleEndian.Uint32(in[0x20:])
	switch {
	case size < 0:
		return nil, mode, fmt.Errorf("inode %d: size overflows", ino)
	case size > limit:
		return nil, mode, fmt.Errorf("inode %d: %d bytes: %w (%d)", ino, size, ErrFileTooLarge, limit)
	case flags&flagInlineData != 0:
		return nil, mode, fmt.Errorf("inode %d: inline data is not supported (build the image without -O inline_data)", ino)
	case flags&flagExtents == 0:
		return nil, mode, fmt.Errorf("inode %d: block-mapped file; the image must use extents (mkfs.ext4's default)", ino)
	}
	f := &File{r: v.r, bs: v.bs, size: size}
	budget := (size+v.bs-1)/v.bs + 1 // blocks the extents may cover
	if err := v.walk(in[0x28:0x28+60], -1, &f.extents, &budget); err != nil {
		return nil, mode, fmt.Errorf("inode %d: %w", ino, err)
	}
	slices.SortFunc(f.extents, func(a, b extent) int { return int(a.logical - b.logical) })
	for i := 1; i < len(f.extents); i++ {
		if p := f.extents[i-1]; p.logical+p.n > f.extents[i].logical {
			return nil, mode, fmt.Errorf("inode %d: overlapping extents at file block %d", ino, f.extents[i].logical)
		}
	}
	return f, mode, nil
}

// walk appends the leaf extents of the extent tree node b; depth is the depth its parent
// expects (-1 for the root in the inode).
func (v *volume) walk(b []byte, depth int, out *[]extent, budget *int64) error {
	if len(b) < 12 || binary.LittleEndian.Uint16(b) != extentMagic {
		return errors.New("bad extent header")
	}
	entries := int(binary.LittleEndian.Uint16(b[2:]))
	d := int(binary.LittleEndian.Uint16(b[6:]))
	switch {
	case d > maxExtentDepth:
		return fmt.Errorf("extent tree depth %d", d)
	case depth >= 0 && d != depth:
		return fmt.Errorf("extent node at depth %d, want %d", d, depth)
	case 12+12*entries > len(b):
		return fmt.Errorf("%d extent entries do not fit in %d bytes", entries, len(b))
	}
	for i := range entries {
		e := b[12+12*i : 24+12*i]
		logical := int64(binary.LittleEndian.Uint32(e[0:]))
		if d > 0 {
			child := int64(binary.LittleEndian.Uint32(e[4:])) | int64(binary.LittleEndian.Uint16(e[8:]))<<32
			node, err := v.read(child, 0, v.bs)
			if err != nil {
				return fmt.Errorf("extent index: %w", err)
			}
			if err := v.walk(node, d-1, out, budget); err != nil {
				return err
			}
			continue
		}
		n := int64(binary.LittleEndian.Uint16(e[4:]))
		x := extent{logical: logical, n: n,
			physical: int64(binary.LittleEndian.Uint16(e[6:]))<<32 | int64(binary.LittleEndian.Uint32(e[8:]))}
		if n > uninitLen {
			x.n, x.unwritten = n-uninitLen, true
		}
		*budget -= x.n
		switch {
		case x.n == 0:
			return errors.New("empty extent")
		case *budget < 0 || len(*out) >= maxExtents:
			return errors.New("the extents cover more blocks than the file's size")
		case x.physical+x.n > v.blocks:
			return fmt.Errorf("extent at block %d (+%d) is outside the %d-block filesystem", x.physical, x.n, v.blocks)
		}
		*out = append(*out, x)
	}
	return nil
}

// lookup finds name in the directory dir (linear entries; the htree index blocks of a large
// directory look like empty entries and are skipped, as the kernel's own fallback does).
func (v *volume) lookup(dir *File, name string) (uint32, error) {
	blk := make([]byte, v.bs)
	for off := int64(0); off < dir.size; off += v.bs {
		if _, err := io.ReadFull(io.NewSectionReader(dir, off, v.bs), blk); err != nil {
			return 0, fmt.Errorf("read directory: %w", err)
		}
		for p := 0; p+8 <= len(blk); {
			ino := binary.LittleEndian.Uint32(blk[p:])
			recLen := int(binary.LittleEndian.Uint16(blk[p+4:]))
			nameLen := int(blk[p+6])
			if recLen < 8 || p+recLen > len(blk) || 8+nameLen > recLen {
				return 0, fmt.Errorf("corrupt directory entry at %d", off+int64(p))
			}
			if ino != 0 && string(blk[p+8:p+8+nameLen]) == name {
				return ino, nil
			}
			p += recLen
		}
	}
	return 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
}
