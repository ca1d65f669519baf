package esp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/partition/slotrelease"
)

// Names in the layout.
const (
	// Subdir is the layout's directory below the ESP mount point.
	Subdir = "twinslot"
	// KernelPath and InitrdPath are where a /usr image carries its kernel and initrd, inside the
	// slot's filesystem (/usr/boot/… on the running system).
	KernelPath = "boot/vmlinuz"
	InitrdPath = "boot/initrd.img"
	// MaxFileSize bounds a kernel or an initrd taken from a slot: anything larger is refused as
	// untrusted input, even from a slot that verified (an ESP is typically 256 MiB for two
	// kernels, two initrds and one temporary copy).
	MaxFileSize = 256 << 20
	tmpPrefix   = "."
	tmpSuffix   = ".tmp"
)

// Reason classifies an install failure.
type Reason int

const (
	// ReasonNoKernel: the new image has no boot/vmlinuz or boot/initrd.img, or one is empty.
	ReasonNoKernel Reason = iota + 1
	// ReasonTooLarge: the kernel or initrd is larger than MaxFileSize.
	ReasonTooLarge
	// ReasonFull: the ESP has not enough free space.
	ReasonFull
	// ReasonUnwritable: the ESP is read-only or not writable by this process.
	ReasonUnwritable
	// ReasonIO: reading the slot or writing the ESP failed otherwise.
	ReasonIO
)

// Sentinels for errors.Is, one per Reason.
var (
	ErrNoKernel   = errors.New("no kernel in the image")
	ErrTooLarge   = errors.New("kernel or initrd too large")
	ErrFull       = errors.New("ESP full")
	ErrUnwritable = errors.New("ESP not writable")
	ErrIO         = errors.New("ESP I/O error")
)

func (r Reason) sentinel() error {
	switch r {
	case ReasonNoKernel:
		return ErrNoKernel
	case ReasonTooLarge:
		return ErrTooLarge
	case ReasonFull:
		return ErrFull
	case ReasonUnwritable:
		return ErrUnwritable
	}
	return ErrIO
}

// Error is an install failure. Nothing of the running slot was touched; the target letter's
// files may be stale, which does not matter before the GPT flip.
type Error struct {
	Reason Reason
	Dir    string // the ESP directory
	File   string // the file concerned: "boot/vmlinuz" in the image, or "vmlinuz-b" on the ESP
	Size   int64  // ReasonTooLarge: the file's size
	Need   int64  // ReasonFull: bytes needed
	Free   int64  // ReasonFull: bytes free
	Err    error  // the underlying error, if any
}

func (e *Error) Error() string {
	var s string
	switch e.Reason {
	case ReasonNoKernel:
		s = fmt.Sprintf("the new /usr image has no usable %s, so it cannot boot from the ESP at %s; "+
			"the image was built without a kernel: rebuild it with the kernel at /usr/boot/vmlinuz and the initrd at /usr/boot/initrd.img", e.File, e.Dir)
	case ReasonTooLarge:
		size := "larger"
		if e.Size > 0 {
			size = fmt.Sprintf("%d bytes,", e.Size)
		}
		s = fmt.Sprintf("%s of the new image is %s more than the %d bytes allowed on the ESP; refusing it: check what the image build put there", e.File, size, MaxFileSize)
	case ReasonFull:
		if e.Need > 0 {
			s = fmt.Sprintf("the ESP at %s has %d bytes free, the new kernel and initrd need %d: remove stray files there or grow the ESP", e.Dir, e.Free, e.Need)
		} else {
			s = fmt.Sprintf("the ESP at %s ran out of space writing %s: remove stray files there or grow the ESP", e.Dir, e.File)
		}
	case ReasonUnwritable:
		s = fmt.Sprintf("cannot write %s in %s: is the ESP mounted read-write at %s?", e.File, filepath.Join(e.Dir, Subdir), e.Dir)
	default:
		s = fmt.Sprintf("install %s into the ESP at %s failed", e.File, e.Dir)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return "esp: " + s
}

// Unwrap returns the Reason's sentinel and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason.sentinel()}
	}
	return []error{e.Reason.sentinel(), e.Err}
}

// Present reports whether the layout exists below dir: dir/twinslot is a directory. An empty
// dir is never present.
func Present(dir string) bool {
	if dir == "" {
		return false
	}
	st, err := os.Stat(filepath.Join(dir, Subdir))
	return err == nil && st.IsDir()
}

// Letter is the ESP file suffix of a slot: "a" for USR-A (partition 3), "b" for USR-B
// (partition 4), by label as grub.cfg maps them.
func Letter(s partition.Slot) (string, error) {
	switch s.Label {
	case "USR-A":
		return "a", nil
	case "USR-B":
		return "b", nil
	}
	return "", fmt.Errorf("esp: slot %s has no ESP letter: only USR-A and USR-B boot from the ESP", s)
}

// Source is one file to install: the Size bytes of R from offset 0. It is read at most twice:
// to compare with the file already on the ESP, and to copy it.
type Source struct {
	Name string // for messages: "boot/vmlinuz"
	R    io.ReaderAt
	Size int64
}

// FromSlot opens the kernel and initrd of the /usr filesystem at the start of r (a slot of size
// bytes). A missing or empty file is an *Error with ReasonNoKernel; a file above MaxFileSize
// one with ReasonTooLarge.
func FromSlot(r io.ReaderAt, size int64) (kernel, initrd Source, err error) {
	open := func(name string) (Source, error) {
		f, err := slotrelease.Open(r, size, name, MaxFileSize)
		switch {
		case errors.Is(err, slotrelease.ErrFileTooLarge):
			return Source{}, &Error{Reason: ReasonTooLarge, File: name, Err: err}
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, slotrelease.ErrNoRelease):
			return Source{}, &Error{Reason: ReasonNoKernel, File: name, Err: err}
		case err != nil:
			return Source{}, &Error{Reason: ReasonIO, File: name, Err: err}
		}
		return Source{Name: name, R: f, Size: f.Size()}, nil
	}
	if kernel, err = open(KernelPath); err != nil {
		return Source{}, Source{}, err
	}
	if initrd, err = open(InitrdPath); err != nil {
		return Source{}, Source{}, err
	}
	return kernel, initrd, nil
}

// InstallSlot installs the kernel and initrd of the slot read through r (size bytes) as letter's
// files below dir: FromSlot, then Install.
func InstallSlot(ctx context.Context, dir, letter string, r io.ReaderAt, size int64) error {
	k, i, err := FromSlot(r, size)
	if err != nil {
		return withDir(err, dir)
	}
	return Install(ctx, dir, letter, k, i)
}

// InstallDisk installs the kernel and initrd of slot t of d as t's letter's files below dir
// (Letter, then InstallSlot). A slot that could boot (priority above 0: the flip already
// happened before a crash, or nothing in it changed, so its bits were never cleared) is first
// made unbootable with d.BeginInstall, so that the files of a slot are replaced only while the
// GPT cannot choose it; the caller's PrepareInstall makes it the next boot afterwards.
func InstallDisk(ctx context.Context, dir string, d *partition.Disk, t partition.Slot) error {
	letter, err := Letter(t)
	if err != nil {
		return err
	}
	if t.Attr.Priority() > 0 {
		if err := d.BeginInstall(t); err != nil {
			return fmt.Errorf("esp: make %s unbootable before replacing its kernel: %w", t, err)
		}
	}
	return InstallSlot(ctx, dir, letter, d.SlotReader(t), t.Size)
}

func withDir(err error, dir string) error {
	var e *Error
	if errors.As(err, &e) && e.Dir == "" {
		e.Dir = dir
	}
	return err
}

// Install writes kernel and initrd as dir/twinslot/vmlinuz-LETTER and initrd-LETTER: stale
// temporary files are removed, free space is checked, then each file goes to a temporary
// name, is fsynced, renamed over the final name and the directory fsynced. A file that already
// holds the same bytes is left alone, so a repeated Install writes nothing. It never touches
// the files of the other letter. Errors are *Error.
func Install(ctx context.Context, dir, letter string, kernel, initrd Source) error {
	return installer{dir: dir}.install(ctx, letter, kernel, initrd)
}

// Step names a point of Install after which a crash leaves a state the tests check.
type step string

const (
	stepCleaned    step = "cleaned"     // stale temporary files removed
	stepKernelTemp step = "kernel-temp" // kernel written and fsynced under its temporary name
	stepKernel     step = "kernel"      // kernel renamed into place, directory fsynced
	stepInitrdTemp step = "initrd-temp" // initrd written and fsynced under its temporary name
	stepInitrd     step = "initrd"      // initrd renamed into place, directory fsynced
)

// installer is Install with a hook the package's tests use to stop after a step.
type installer struct {
	dir   string
	after func(step) error
}

func (in installer) mark(s step) error {
	if in.after == nil {
		return nil
	}
	return in.after(s)
}

func (in installer) install(ctx context.Context, letter string, kernel, initrd Source) error {
	if letter != "a" && letter != "b" {
		return fmt.Errorf("esp: letter %q: want a or b", letter)
	}
	sub := filepath.Join(in.dir, Subdir)
	for _, s := range []Source{kernel, initrd} {
		switch {
		case s.R == nil || s.Size <= 0:
			return &Error{Reason: ReasonNoKernel, Dir: in.dir, File: s.Name, Err: errors.New("empty")}
		case s.Size > MaxFileSize:
			return &Error{Reason: ReasonTooLarge, Dir: in.dir, File: s.Name, Size: s.Size}
		}
	}
	if err := removeStale(sub); err != nil {
		return classify(in.dir, "stale temporary files", err)
	}
	if err := in.mark(stepCleaned); err != nil {
		return err
	}
	files := []struct {
		src        Source
		name       string
		temp, done step
	}{
		{kernel, "vmlinuz-" + letter, stepKernelTemp, stepKernel},
		{initrd, "initrd-" + letter, stepInitrdTemp, stepInitrd},
	}
	if err := checkSpace(in.dir, sub, kernel.Size, initrd.Size, sizeOf(filepath.Join(sub, files[0].name))); err != nil {
		return err
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if same, err := sameContent(ctx, filepath.Join(sub, f.name), f.src); err != nil {
			return classify(in.dir, f.src.Name, err)
		} else if same {
			// Already in place (a repeated Finalizing after a crash, possibly after the flip):
			// leave it alone rather than replace the file of a slot that may boot next.
			continue
		}
		tmp := filepath.Join(sub, tmpPrefix+f.name+tmpSuffix)
		if err := writeFile(ctx, tmp, f.src); err != nil {
			os.Remove(tmp)
			return classify(in.dir, f.name, err)
		}
		if err := in.mark(f.temp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(sub, f.name)); err != nil {
			os.Remove(tmp)
			return classify(in.dir, f.name, err)
		}
		if err := atomicfile.SyncDir(sub); err != nil {
			return classify(in.dir, f.name, err)
		}
		if err := in.mark(f.done); err != nil {
			return err
		}
	}
	return nil
}

// removeStale removes temporary files a crashed install left behind.
func removeStale(sub string) error {
	entries, err := os.ReadDir(sub)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, tmpPrefix) && strings.HasSuffix(n, tmpSuffix) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(sub, n)); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return atomicfile.SyncDir(sub)
	}
	return nil
}

func sizeOf(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// checkSpace refuses when the ESP cannot hold the new files while the old ones still exist.
// The kernel's temporary copy is written beside the old kernel; after its rename the old kernel
// is freed, then the initrd's copy is written beside the old initrd. The peak is therefore
// max(kernel, kernel - oldKernel + initrd), each rounded up to the filesystem's block size.
func checkSpace(dir, sub string, kernel, initrd, oldKernel int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(sub, &st); err != nil {
		return classify(dir, Subdir, err)
	}
	bs := int64(st.Bsize)
	if bs <= 0 {
		bs = 4096
	}
	round := func(n int64) int64 { return (n + bs - 1) / bs * bs }
	need := max(round(kernel), round(kernel)-round(oldKernel)+round(initrd))
	free := int64(st.Bavail) * bs
	if free < need {
		return &Error{Reason: ReasonFull, Dir: dir, Need: need, Free: free}
	}
	return nil
}

// writeFile copies exactly s.Size bytes of s into a new file p and fsyncs it.
func writeFile(ctx context.Context, p string, s Source) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: io.NewSectionReader(s.R, 0, s.Size)})
	if err == nil && n != s.Size {
		err = fmt.Errorf("read %d of %d bytes of %s: %w", n, s.Size, s.Name, io.ErrUnexpectedEOF)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sameContent reports whether the file p exists and holds exactly the bytes of s.
func sameContent(ctx context.Context, p string, s Source) (bool, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != s.Size || !st.Mode().IsRegular() {
		return false, err
	}
	const bufSize = 1 << 20
	a, b := make([]byte, bufSize), make([]byte, bufSize)
	for off := int64(0); off < s.Size; off += bufSize {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n := min(bufSize, s.Size-off)
		if _, err := f.ReadAt(a[:n], off); err != nil {
			return false, err
		}
		if _, err := s.R.ReadAt(b[:n], off); err != nil && !(errors.Is(err, io.EOF) && off+n == s.Size) {
			return false, fmt.Errorf("read %s: %w", s.Name, err)
		}
		if !bytes.Equal(a[:n], b[:n]) {
			return false, nil
		}
	}
	return true, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// classify wraps err as an *Error with the Reason its errno says.
func classify(dir, file string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	r := ReasonIO
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		r = ReasonFull
	case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		r = ReasonUnwritable
	}
	return &Error{Reason: r, Dir: dir, File: file, Err: err}
}
