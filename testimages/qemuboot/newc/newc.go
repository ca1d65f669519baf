package newc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
	// MaxFileSize is the largest file a newc header can describe (32-bit size field).
	MaxFileSize = 1<<32 - 1
	// MaxNameLen bounds an entry name; the kernel's PATH_MAX is 4096 with the NUL.
	MaxNameLen = 4095
)

// File type bits of the mode field (as in stat(2)).
const (
	typeMask    = 0o170000
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
	typeCharDev = 0o020000
)

// ErrClosed: an entry was written after Close.
var ErrClosed = errors.New("newc: archive closed")

// Writer writes a newc archive. It is not safe for concurrent use.
type Writer struct {
	w      io.Writer
	off    int64
	ino    uint32
	names  map[string]bool
	dirs   map[string]bool
	closed bool
}

// NewWriter returns a Writer that writes an archive to w. Close writes the trailer.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, names: map[string]bool{}, dirs: map[string]bool{}}
}

// Dir adds a directory.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, typeDir|uint32(perm.Perm()), 0, 0, nil)
}

// File adds a regular file holding data.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.entry(name, typeRegular|uint32(perm.Perm()), 0, 0, data)
}

// Symlink adds a symbolic link name → target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" {
		return fmt.Errorf("newc: symlink %s: empty target", name)
	}
	return w.entry(name, typeSymlink|0o777, 0, 0, []byte(target))
}

// CharDev adds a character device node (dev/console is 5, 1).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, typeCharDev|uint32(perm.Perm()), major, minor, nil)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return ErrClosed
	}
	w.closed = true
	return w.write(header{name: trailer, nlink: 1}, nil)
}

func (w *Writer) entry(name string, mode, rmajor, rminor uint32, data []byte) error {
	if w.closed {
		return ErrClosed
	}
	if err := checkName(name); err != nil {
		return err
	}
	if w.names[name] {
		return fmt.Errorf("newc: %s: duplicate entry", name)
	}
	if int64(len(data)) > MaxFileSize {
		return fmt.Errorf("newc: %s: %d bytes, more than %d", name, len(data), int64(MaxFileSize))
	}
	if err := w.parents(path.Dir(name)); err != nil {
		return err
	}
	nlink := uint32(1)
	if mode&typeMask == typeDir {
		nlink = 2
		w.dirs[name] = true
	}
	w.names[name] = true
	w.ino++
	return w.write(header{name: name, ino: w.ino, mode: mode, nlink: nlink, rmajor: rmajor, rminor: rminor}, data)
}

// parents writes the missing ancestors of dir, outermost first.
func (w *Writer) parents(dir string) error {
	if dir == "." || w.dirs[dir] {
		return nil
	}
	if w.names[dir] {
		return fmt.Errorf("newc: %s is not a directory", dir)
	}
	return w.Dir(dir, 0o755)
}

type header struct {
	name             string
	ino, mode, nlink uint32
	rmajor, rminor   uint32
}

// write emits one header, its name and data, each padded to 4 bytes.
func (w *Writer) write(h header, data []byte) error {
	var b strings.Builder
	b.WriteString(magic)
	name := h.name
	for _, v := range []uint32{h.ino, h.mode, 0, 0, h.nlink, 0, uint32(len(data)), 0, 0, h.rmajor, h.rminor, uint32(len(name) + 1), 0} {
		fmt.Fprintf(&b, "%08X", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	b.Write(make([]byte, pad(headerSize+len(name)+1)))
	if err := w.emit([]byte(b.String())); err != nil {
		return err
	}
	if err := w.emit(data); err != nil {
		return err
	}
	return w.emit(make([]byte, pad(len(data))))
}

func (w *Writer) emit(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	n, err := w.w.Write(p)
	w.off += int64(n)
	if err != nil {
		return fmt.Errorf("newc: write at offset %d: %w", w.off, err)
	}
	return nil
}

func pad(n int) int { return (4 - n%4) % 4 }

func checkName(name string) error {
	switch {
	case name == "" || name == ".":
		return errors.New("newc: empty entry name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("newc: entry name of %d bytes, more than %d", len(name), MaxNameLen)
	case name == trailer:
		return fmt.Errorf("newc: %q is the trailer's name", name)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("newc: entry name %q holds a NUL", name)
	case !fs.ValidPath(name):
		return fmt.Errorf("newc: entry name %q is not a clean relative path", name)
	}
	return nil
}
