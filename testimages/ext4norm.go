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
	sbOffset       = 1024
	sbMagic        = 0xEF53
	roCompatCsum   = 0x400 // metadata_csum
	incompat64Bit  = 0x80
	inodeExtraSize = 0x80
	maxGroups      = 1 << 20
	maxInodeSize   = 1024
)

type rw interface {
	io.ReaderAt
	io.WriterAt
}

// normalizeExt4 makes a filesystem written by go-diskfs reproducible. go-diskfs stamps
// inodes and the superblock with time.Now and draws a random directory hash seed; this sets
// every inode time (atime, ctime, mtime, crtime and their extra fields) and the superblock
// times to Epoch, the hash seed to hashSeed, and recomputes the inode checksums the way
// go-diskfs does (CRC32c over seed, inode number, generation and the inode). The filesystem
// starts at byte base of dev. It refuses features it would have to handle differently
// (metadata_csum, whose other checksums would also change).
func normalizeExt4(dev rw, base int64, hashSeed [16]byte) error {
	sb := make([]byte, 1024)
	if _, err := dev.ReadAt(sb, base+sbOffset); err != nil {
		return fmt.Errorf("read superblock: %w", err)
	}
	le32 := func(b []byte, off int) uint64 { return uint64(binary.LittleEndian.Uint32(b[off:])) }
	le16 := func(b []byte, off int) int { return int(binary.LittleEndian.Uint16(b[off:])) }
	if le16(sb, 0x38) != sbMagic {
		return errors.New("no ext4 superblock")
	}
	if le32(sb, 0x64)&roCompatCsum != 0 {
		return errors.New("metadata_csum filesystems are not supported")
	}
	blockSize := int64(1024) << le32(sb, 0x18)
	blocksPerGroup, inodesPerGroup := le32(sb, 0x20), le32(sb, 0x28)
	firstData := le32(sb, 0x14)
	inodeSize := le16(sb, 0x58)
	is64 := le32(sb, 0x60)&incompat64Bit != 0
	blocks := le32(sb, 0x04)
	descSize := 32
	if is64 {
		blocks |= le32(sb, 0x150) << 32
		descSize = le16(sb, 0xFE)
	}
	if blockSize > 64<<10 || blocksPerGroup == 0 || inodesPerGroup == 0 || inodeSize < 160 || inodeSize > maxInodeSize || descSize < 32 || blocks <= firstData {
		return fmt.Errorf("unexpected superblock geometry (block %d, inode %d, desc %d)", blockSize, inodeSize, descSize)
	}
	groups := (blocks - firstData + blocksPerGroup - 1) / blocksPerGroup
	if groups > maxGroups {
		return fmt.Errorf("%d block groups", groups)
	}
	seed := uint32(le32(sb, 0x270))
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
	for g := uint64(1); g < groups; g++ {
		off := base + int64(g*blocksPerGroup+firstData)*blockSize // a copy starts its group
		if _, err := dev.ReadAt(backup, off); err != nil {
			return fmt.Errorf("read group %d: %w", g, err)
		}
		if le16(backup, 0x38) != sbMagic || string(backup[0x68:0x78]) != string(uuid) {
			continue
		}
		stamp(backup)
		if _, err := dev.WriteAt(backup, off); err != nil {
			return fmt.Errorf("write superblock copy in group %d: %w", g, err)
		}
	}

	// Inode tables.
	gdt := make([]byte, int(groups)*descSize)
	gdtOff := base + int64(firstData+1)*blockSize
	if _, err := dev.ReadAt(gdt, gdtOff); err != nil {
		return fmt.Errorf("read group descriptors: %w", err)
	}
	table := make([]byte, int(inodesPerGroup)*inodeSize)
	for g := range groups {
		d := gdt[int(g)*descSize:]
		itable := le32(d, 0x08)
		if is64 && descSize >= 64 {
			itable |= le32(d, 0x28) << 32
		}
		off := base + int64(itable)*blockSize
		if _, err := dev.ReadAt(table, off); err != nil {
			return fmt.Errorf("read inode table of group %d: %w", g, err)
		}
		changed := false
		for i := range int(inodesPerGroup) {
			in := table[i*inodeSize : (i+1)*inodeSize]
			if allZero(in) {
				continue
			}
			stampInode(in, uint32(g*inodesPerGroup)+uint32(i)+1, seed)
			changed = true
		}
		if changed {
			if _, err := dev.WriteAt(table, off); err != nil {
				return fmt.Errorf("write inode table of group %d: %w", g, err)
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
	clear(in[0x7C:0x7E])
	clear(in[0x82:0x84])
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], number)
	sum := crc.CRC32c(seed, n[:])
	sum = crc.CRC32c(sum, in[0x64:0x68]) // generation
	sum = crc.CRC32c(sum, in)
	binary.LittleEndian.PutUint16(in[0x7C:], uint16(sum))
	binary.LittleEndian.PutUint16(in[0x82:], uint16(sum>>16))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
