package testimages

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/filesystem/ext4/crc"
)

// Epoch is the time stamped on every inode and superblock field of a /usr image
// (2026-01-01T00:00:00Z), so that builds are reproducible.
const Epoch = 1767225600

// Offsets in the ext4 superblock and inode (Documentation/filesystems/ext4 in the kernel).
const (
	sbOffset         = 1024
	sbMagic          = 0xEF53
	roCompatCsum     = 0x400 // metadata_csum
	incompat64Bit    = 0x80
	incompatCsumSeed = 0x2000 // metadata_csum_seed: the seed is s_checksum_seed
	inodeExtraSize   = 0x80
	maxGroups        = 1 << 20
	maxInodeSize     = 1024
)

type rw interface {
	io.ReaderAt
	io.WriterAt
}

// ext4Geometry is what walking the inode tables of an ext4 filesystem needs.
type ext4Geometry struct {
	sb             []byte // the primary superblock
	blockSize      int64
	blocksPerGroup uint64
	inodesPerGroup uint64
	firstData      uint64
	inodeSize      int
	descSize       int
	is64           bool
	groups         uint64
}

func le32(b []byte, off int) uint64 { return uint64(binary.LittleEndian.Uint32(b[off:])) }
func le16(b []byte, off int) int    { return int(binary.LittleEndian.Uint16(b[off:])) }

// readGeometry reads and checks the superblock of the filesystem at byte base of dev.
func readGeometry(dev io.ReaderAt, base int64) (ext4Geometry, error) {
	sb := make([]byte, 1024)
	if _, err := dev.ReadAt(sb, base+sbOffset); err != nil {
		return ext4Geometry{}, fmt.Errorf("read superblock: %w", err)
	}
	if le16(sb, 0x38) != sbMagic {
		return ext4Geometry{}, errors.New("no ext4 superblock")
	}
	g := ext4Geometry{sb: sb, blockSize: int64(1024) << le32(sb, 0x18), blocksPerGroup: le32(sb, 0x20), inodesPerGroup: le32(sb, 0x28),
		firstData: le32(sb, 0x14), inodeSize: le16(sb, 0x58), is64: le32(sb, 0x60)&incompat64Bit != 0, descSize: 32}
	blocks := le32(sb, 0x04)
	if g.is64 {
		blocks |= le32(sb, 0x150) << 32
		g.descSize = le16(sb, 0xFE)
	}
	if g.blockSize > 64<<10 || g.blocksPerGroup == 0 || g.inodesPerGroup == 0 || g.inodeSize < 160 || g.inodeSize > maxInodeSize || g.descSize < 32 || blocks <= g.firstData {
		return ext4Geometry{}, fmt.Errorf("unexpected superblock geometry (block %d, inode %d, desc %d)", g.blockSize, g.inodeSize, g.descSize)
	}
	g.groups = (blocks - g.firstData + g.blocksPerGroup - 1) / g.blocksPerGroup
	if g.groups > maxGroups {
		return ext4Geometry{}, fmt.Errorf("%d block groups", g.groups)
	}
	return g, nil
}

// normalizeExt4 makes a filesystem written by go-diskfs reproducible. go-diskfs stamps
// inodes and the superblock with time.Now and draws a random directory hash seed; this sets
// every inode time (atime, ctime, mtime, crtime and their extra fields) and the superblock
// times to Epoch, the hash seed to hashSeed, and recomputes the inode checksums the way
// go-diskfs does (CRC32c over seed, inode number, generation and the inode). The filesystem
// starts at byte base of dev. It refuses features it would have to handle differently
// (metadata_csum, whose superblock and directory checksums would also change).
func normalizeExt4(dev rw, base int64, hashSeed [16]byte) error {
	g, err := readGeometry(dev, base)
	if err != nil {
		return err
	}
	sb := g.sb
	if le32(sb, 0x64)&roCompatCsum != 0 {
		return errors.New("metadata_csum filesystems are not supported")
	}
	uuid := sb[0x68:0x78]

	// Superblock and its backups (found where a copy with this UUID sits at a group start).
	stamp := func(b []byte) {
		for _, off := range []int{0x2C, 0x30, 0x40, 0x108} { // mtime, wtime, lastcheck, mkfs_time
			binary.LittleEndian.PutUint32(b[off:], Epoch)
		}
		clear(b[0x274:0x278]) // the _hi bytes of those times
		copy(b[0xEC:0xFC], hashSeed[:])
	}
	stamp(sb)
	if _, err := dev.WriteAt(sb, base+sbOffset); err != nil {
		return fmt.Errorf("write superblock: %w", err)
	}
	backup := make([]byte, 1024)
	for grp := uint64(1); grp < g.groups; grp++ {
		off := base + int64(grp*g.blocksPerGroup+g.firstData)*g.blockSize // a copy starts its group
		if _, err := dev.ReadAt(backup, off); err != nil {
			return fmt.Errorf("read group %d: %w", grp, err)
		}
		if le16(backup, 0x38) != sbMagic || string(backup[0x68:0x78]) != string(uuid) {
			continue
		}
		stamp(backup)
		if _, err := dev.WriteAt(backup, off); err != nil {
			return fmt.Errorf("write superblock copy in group %d: %w", grp, err)
		}
	}
	return stampInodes(dev, base, g, uint32(le32(sb, 0x270)), false)
}

// StampExt4Times sets every inode time (atime, ctime, mtime, crtime and their extra fields)
// of the ext4 filesystem at byte base of dev to Epoch and recomputes the inode checksums,
// with or without metadata_csum; the superblock is left as it is. mkfs.ext4 -d copies each
// source file's ctime, which nothing can set, so a reproducible image is stamped after. With
// metadata_csum every inode's checksum is verified before it is rewritten, so a layout this
// code does not know fails instead of leaving a corrupt filesystem.
func StampExt4Times(dev rw, base int64) error {
	g, err := readGeometry(dev, base)
	if err != nil {
		return fmt.Errorf("stamp ext4 times: %w", err)
	}
	seed, verify := uint32(le32(g.sb, 0x270)), false
	if le32(g.sb, 0x64)&roCompatCsum != 0 {
		verify = true
		if le32(g.sb, 0x60)&incompatCsumSeed == 0 {
			seed = crc.CRC32c(0xffffffff, g.sb[0x68:0x78]) // the kernel's s_csum_seed
		}
	}
	if err := stampInodes(dev, base, g, seed, verify); err != nil {
		return fmt.Errorf("stamp ext4 times: %w", err)
	}
	return nil
}

// stampInodes stamps every used inode of the filesystem (stampInode).
func stampInodes(dev rw, base int64, g ext4Geometry, seed uint32, verify bool) error {
	gdt := make([]byte, int(g.groups)*g.descSize)
	gdtOff := base + int64(g.firstData+1)*g.blockSize
	if _, err := dev.ReadAt(gdt, gdtOff); err != nil {
		return fmt.Errorf("read group descriptors: %w", err)
	}
	table := make([]byte, int(g.inodesPerGroup)*g.inodeSize)
	for grp := range g.groups {
		d := gdt[int(grp)*g.descSize:]
		itable := le32(d, 0x08)
		if g.is64 && g.descSize >= 64 {
			itable |= le32(d, 0x28) << 32
		}
		off := base + int64(itable)*g.blockSize
		if _, err := dev.ReadAt(table, off); err != nil {
			return fmt.Errorf("read inode table of group %d: %w", grp, err)
		}
		changed := false
		for i := range int(g.inodesPerGroup) {
			in := table[i*g.inodeSize : (i+1)*g.inodeSize]
			if allZero(in) {
				continue
			}
			number := uint32(grp*g.inodesPerGroup) + uint32(i) + 1
			if verify && !checksumMatches(in, inodeChecksum(in, number, seed)) {
				return fmt.Errorf("inode %d: its checksum does not verify; not rewriting a filesystem laid out in a way this code does not know", number)
			}
			stampInode(in, number, seed)
			changed = true
		}
		if changed {
			if _, err := dev.WriteAt(table, off); err != nil {
				return fmt.Errorf("write inode table of group %d: %w", grp, err)
			}
		}
	}
	return nil
}

// stampInode sets the times of one inode to Epoch and recomputes its checksum.
func stampInode(in []byte, number, seed uint32) {
	for _, off := range []int{0x08, 0x0C, 0x10} { // atime, ctime, mtime
		binary.LittleEndian.PutUint32(in[off:], Epoch)
	}
	if extra := int(binary.LittleEndian.Uint16(in[inodeExtraSize:])); extra >= 0x18 {
		clear(in[0x84:0x90]) // ctime, mtime, atime extra (nanoseconds, epoch bits)
		binary.LittleEndian.PutUint32(in[0x90:], Epoch)
		clear(in[0x94:0x98]) // crtime extra
	}
	sum := inodeChecksum(in, number, seed)
	binary.LittleEndian.PutUint16(in[0x7C:], uint16(sum))
	if hasChecksumHi(in) {
		binary.LittleEndian.PutUint16(in[0x82:], uint16(sum>>16))
	}
}

// hasChecksumHi: the inode's extra fields reach i_checksum_hi. mkfs.ext4 writes the reserved
// inodes (1, 3–10) with no extra fields; they store the low 16 bits of their checksum only.
func hasChecksumHi(in []byte) bool { return binary.LittleEndian.Uint16(in[inodeExtraSize:]) >= 4 }

// inodeChecksum is the CRC32c of an inode as ext4 computes it: over the seed, the inode
// number, the generation and the inode with its checksum fields zeroed.
func inodeChecksum(in []byte, number, seed uint32) uint32 {
	lo, hi := [2]byte(in[0x7C:0x7E]), [2]byte(in[0x82:0x84])
	clear(in[0x7C:0x7E])
	clear(in[0x82:0x84])
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], number)
	sum := crc.CRC32c(seed, n[:])
	sum = crc.CRC32c(sum, in[0x64:0x68]) // generation
	sum = crc.CRC32c(sum, in)
	copy(in[0x7C:], lo[:])
	copy(in[0x82:], hi[:])
	return sum
}

// checksumMatches compares an inode's stored checksum with sum (its low 16 bits when the
// inode has no i_checksum_hi).
func checksumMatches(in []byte, sum uint32) bool {
	if uint16(sum) != binary.LittleEndian.Uint16(in[0x7C:]) {
		return false
	}
	return !hasChecksumHi(in) || uint16(sum>>16) == binary.LittleEndian.Uint16(in[0x82:])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
