package slotrelease

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/ext4"

	"github.com/twinslot/twinslot/partition/osrelease"
)

// Paths inside the /usr filesystem (it is mounted at /usr, so these are /usr/lib/…).
const (
	ReleasePath = osrelease.Path
	BrokenPath  = "lib/twinslot/broken"
)

// Offsets and limits of the ext4 superblock (Documentation/filesystems/ext4 in the kernel).
const (
	sbMagic       = 0xEF53
	incompat64Bit = 0x80
	maxInodeSize  = 1024
)

// ErrNoRelease: a slot or image holds no readable twinslot /usr filesystem.
var ErrNoRelease = errors.New("no twinslot /usr filesystem")

// Release is what a /usr image says about itself.
type Release struct {
	ID      string // "twinslot"
	Version string // "1.0.1"
	Board   string // "amd64-usr"
	Broken  bool   // the image carries lib/twinslot/broken: its health check fails
}

// FromOSRelease is the Release an os-release file says (osrelease.Parse, the one parser);
// Broken is not in the file and stays false.
func FromOSRelease(b []byte) (Release, error) {
	r, err := osrelease.Parse(b)
	if err != nil {
		return Release{}, err
	}
	return Release{ID: r.ID, Version: r.Version, Board: r.Board}, nil
}

// Read reads lib/os-release (and whether lib/twinslot/broken exists) from the ext4
// /usr filesystem at the start of r, which holds size bytes (a slot or an image file). The
// error wraps ErrNoRelease when there is no such filesystem or file.
func Read(r io.ReaderAt, size int64) (rel Release, err error) {
	// The bytes come from a slot that may hold anything; go-diskfs is not hardened against
	// every corrupt filesystem, so a panic in it is turned into an error here.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: corrupt filesystem (%v)", ErrNoRelease, p)
		}
	}()
	if err := checkSuperblock(r, size); err != nil {
		return Release{}, fmt.Errorf("%w: %v", ErrNoRelease, err)
	}
	fsys, err := ext4.Read(&readerStorage{r: r, size: size}, size, 0, 512)
	if err != nil {
		return Release{}, fmt.Errorf("%w: %v", ErrNoRelease, err)
	}
	b, err := readFileLimited(fsys, ReleasePath, osrelease.MaxSize)
	if err != nil {
		return Release{}, fmt.Errorf("%w: %s: %v", ErrNoRelease, ReleasePath, err)
	}
	rel, err = FromOSRelease(b)
	if err != nil {
		return Release{}, fmt.Errorf("%w: %v", ErrNoRelease, err)
	}
	if _, err := fsys.Stat(BrokenPath); err == nil {
		rel.Broken = true
	}
	return rel, nil
}

// checkSuperblock bounds what go-diskfs will allocate for the filesystem at the start of r
// (it sizes tables from superblock fields): an ext4 superblock whose geometry fits in size.
func checkSuperblock(r io.ReaderAt, size int64) error {
	sb := make([]byte, 1024)
	if size < 2048 {
		return fmt.Errorf("%d bytes is too small for ext4", size)
	}
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return fmt.Errorf("read superblock: %w", err)
	}
	le32 := func(off int) uint64 { return uint64(binary.LittleEndian.Uint32(sb[off:])) }
	if binary.LittleEndian.Uint16(sb[0x38:]) != sbMagic {
		return errors.New("no ext4 superblock")
	}
	logBlock := le32(0x18)
	if logBlock > 6 {
		return fmt.Errorf("block size 1024<<%d", logBlock)
	}
	bs := uint64(1024) << logBlock
	blocks, bpg, ipg := le32(0x04), le32(0x20), le32(0x28)
	if le32(0x60)&incompat64Bit != 0 {
		blocks |= le32(0x150) << 32
	}
	isize := uint64(binary.LittleEndian.Uint16(sb[0x58:]))
	switch {
	case blocks == 0 || blocks > uint64(size)/bs:
		return fmt.Errorf("%d blocks of %d bytes do not fit in %d bytes", blocks, bs, size)
	case bpg < 8 || bpg > 8*bs || ipg == 0 || ipg > 8*bs:
		return fmt.Errorf("%d blocks and %d inodes per group", bpg, ipg)
	case isize < 128 || isize > maxInodeSize || isize&(isize-1) != 0:
		return fmt.Errorf("inode size %d", isize)
	}
	return nil
}

func readFileLimited(fsys *ext4.FileSystem, name string, limit int64) ([]byte, error) {
	st, err := fsys.Stat(name)
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%d bytes, more than %d", st.Size(), limit)
	}
	f, err := fsys.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// readerStorage presents an io.ReaderAt as a read-only go-diskfs backend.
type readerStorage struct {
	r    io.ReaderAt
	size int64
	pos  int64
}

var _ backend.Storage = (*readerStorage)(nil)

func (s *readerStorage) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	if rest := s.size - off; int64(len(p)) > rest {
		n, err := s.r.ReadAt(p[:rest], off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return s.r.ReadAt(p, off)
}

func (s *readerStorage) Read(p []byte) (int, error) {
	n, err := s.ReadAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}

func (s *readerStorage) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += s.pos
	case io.SeekEnd:
		off += s.size
	}
	if off < 0 {
		return 0, errors.New("negative position")
	}
	s.pos = off
	return off, nil
}

func (s *readerStorage) Stat() (fs.FileInfo, error) { return nil, errors.New("stat not supported") }
func (s *readerStorage) Close() error               { return nil }
func (s *readerStorage) Sys() (*os.File, error)     { return nil, errors.New("no OS file") }
func (s *readerStorage) Path() string               { return "" }
func (s *readerStorage) Writable() (backend.WritableFile, error) {
	return nil, errors.New("read-only")
}
