package testimages

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/google/uuid"

	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/partition/esp"
)

const (
	fillFraction = 0.75    // a fresh tree fills this much of the filesystem
	maxFileSize  = 8 << 20 // resizes never grow a file beyond this
	blockSize    = 4096    // ext4 block size of the images
)

// ChangeKind says how the files a new build changes differ from the base's.
type ChangeKind string

// Kinds of change.
const (
	ChangeEdit    ChangeKind = "edit"    // mostly a few small regions edited in place; some resized, removed, replaced
	ChangeRewrite ChangeKind = "rewrite" // every changed file rewritten whole, same size
)

// UsrOptions describe a /usr image.
type UsrOptions struct {
	Version string  // required: VERSION= in lib/os-release, and the seed of the content
	Board   string  // BOARD=; default DefaultBoard
	Size    int64   // filesystem size in bytes; default DefaultUsrSize, or the size of Base
	Base    string  // optional: path of an older image this one is a new build of
	Change  float64 // with Base: fraction 0..1 of the base files that change
	// ChangeKind says how the changed files change: ChangeEdit (the default: mostly small
	// in-place edits, some resizes, removals and replacements) or ChangeRewrite (rewritten whole).
	ChangeKind ChangeKind
	Broken     bool // add lib/twinslot/broken, so the health check of a host running it fails
	// Kernel and Initrd, when set, are written as boot/vmlinuz and boot/initrd.img (the /usr
	// image's own kernel, which partition/esp copies to the ESP). Without them the image has
	// neither file, also when Base had them.
	Kernel, Initrd []byte
	// Progress, when set, is called with bytes of file content written so far and the total.
	Progress func(done, total int64)
}

func (o *UsrOptions) check() error {
	if o.Board == "" {
		o.Board = DefaultBoard
	}
	if err := checkField("version", o.Version); err != nil {
		return err
	}
	if err := checkField("board", o.Board); err != nil {
		return err
	}
	if o.Change < 0 || o.Change > 1 {
		return fmt.Errorf("change %v is outside 0..1", o.Change)
	}
	if o.Change != 0 && o.Base == "" {
		return errors.New("change needs a base image to change")
	}
	switch o.ChangeKind {
	case "":
		o.ChangeKind = ChangeEdit
	case ChangeEdit, ChangeRewrite:
	default:
		return fmt.Errorf("change kind %q is neither %q nor %q", o.ChangeKind, ChangeEdit, ChangeRewrite)
	}
	if o.Size == 0 && o.Base != "" {
		st, err := os.Stat(o.Base)
		if err != nil {
			return fmt.Errorf("base image: %w", err)
		}
		o.Size = st.Size()
	}
	if o.Size == 0 {
		o.Size = DefaultUsrSize
	}
	if o.Size < MinUsrSize || o.Size%blockSize != 0 {
		return fmt.Errorf("size %d must be a multiple of %d and at least %d (8 MiB)", o.Size, blockSize, int64(MinUsrSize))
	}
	return nil
}

// BuildUsr writes a /usr filesystem image (ext4) to path. The image is a pure function of
// the options: the same options give a byte-identical file. Without Base the files are
// generated from Version and Board and fill about 75% of the filesystem; with Base the files
// of that image are copied, about Change of them edited, resized, replaced or removed and a
// few added, and the filesystem is built afresh from that tree, so block positions shift as
// they do in a real build. lib/os-release always says ID=twinslot, VERSION, BOARD.
func BuildUsr(ctx context.Context, path string, o UsrOptions) error {
	if err := o.check(); err != nil {
		return fmt.Errorf("build /usr image: %w", err)
	}
	return atomicfile.Write(path, 0o644, func(f *os.File) error {
		if err := f.Truncate(o.Size); err != nil {
			return err
		}
		return buildUsrAt(ctx, f, 0, o)
	})
}

// buildUsrAt builds the filesystem of o into f at byte offset start (0 for an image file,
// the slot offset for a disk). o must have passed check.
func buildUsrAt(ctx context.Context, f *os.File, start int64, o UsrOptions) error {
	files, base, err := planTree(o)
	if base != nil {
		defer base.Close()
	}
	if err != nil {
		return err
	}
	var total int64
	for _, fs := range files {
		total += fs.size
	}
	id := releaseSeed("uuid", o)
	fsUUID, err := uuid.FromBytes(id[:16])
	if err != nil {
		return err
	}
	fsys, err := ext4.Create(file.New(f, false), o.Size, start, 512, &ext4.Params{
		UUID:            &fsUUID,
		SectorsPerBlock: blockSize / 512,
		VolumeName:      "USR",
		Features: []ext4.FeatureOpt{
			ext4.WithFeatureHasJournal(false), // read-only /usr, as Flatcar's
			ext4.WithFeatureMetadataChecksums(false),
			ext4.WithFeatureReservedGDTBlocksForExpansion(false), // never resized
		},
	})
	if err != nil {
		return fmt.Errorf("create ext4 of %d bytes: %w", o.Size, err)
	}
	var dirs []string
	for _, fs := range files {
		dirs = append(dirs, path.Dir(fs.path))
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if d == "." {
			continue
		}
		if err := fsys.Mkdir(d); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	gen := newGenerator()
	var done int64
	for _, fs := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		content, err := gen.content(fs, base)
		if err != nil {
			return err
		}
		w, err := fsys.OpenFile(fs.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("create %s: %w", fs.path, err)
		}
		if _, err := w.Write(content); err != nil {
			w.Close()
			return fmt.Errorf("write %s (%d bytes; %d of %d bytes written): %w — the content does not fit a %d-byte filesystem, use a larger size",
				fs.path, len(content), done, total, err, o.Size)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("close %s: %w", fs.path, err)
		}
		done += fs.size
		if o.Progress != nil {
			o.Progress(done, total)
		}
	}
	seed := releaseSeed("hash-seed", o)
	if err := normalizeExt4(f, start, [16]byte(seed[:16])); err != nil {
		return fmt.Errorf("normalise ext4: %w", err)
	}
	return nil
}

func releaseSeed(label string, o UsrOptions) [32]byte {
	return sha256.Sum256([]byte(strings.Join([]string{"twinslot-usr", label, o.Board, o.Version}, "\x00")))
}

// planTree lists the files of the image in the order they are written (by path), with the
// base filesystem when o has a Base (the caller closes it).
func planTree(o UsrOptions) ([]fileSpec, *baseImage, error) {
	var files []fileSpec
	var base *baseImage
	if o.Base != "" {
		var err error
		if base, err = openBase(o.Base); err != nil {
			return nil, nil, err
		}
		seed := seedOf("change", o.Board, o.Version)
		files = derivedTree(base.files, o.Change, o.ChangeKind, seed)
	} else {
		budget := int64(float64(o.Size)*fillFraction) - int64(len(o.Kernel)+len(o.Initrd))
		files = freshTree(seedOf("tree", o.Board, o.Version), max(budget, 0))
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{esp.KernelPath, o.Kernel}, {esp.InitrdPath, o.Initrd}} {
		if f.data != nil {
			files = append(files, fileSpec{path: f.path, data: f.data, fixed: true})
		}
	}
	rel := Release{ID: ReleaseID, Version: o.Version, Board: o.Board, Broken: o.Broken}
	files = append(files, fileSpec{path: ReleasePath, data: []byte(osRelease(rel))})
	if o.Broken {
		files = append(files, fileSpec{path: BrokenPath, data: []byte("this image is built to fail its health check\n")})
	}
	for i := range files {
		if files[i].data != nil {
			files[i].size = int64(len(files[i].data))
		}
		if !files[i].fixed {
			files[i].size = min(files[i].size, maxFileSize)
		}
	}
	slices.SortStableFunc(files, func(a, b fileSpec) int { return strings.Compare(a.path, b.path) })
	files = slices.CompactFunc(files, func(a, b fileSpec) bool { return a.path == b.path })
	return files, base, nil
}

// baseImage is an open base /usr image and its files (without the release files).
type baseImage struct {
	f     *os.File
	fsys  *ext4.FileSystem
	files []baseFile
}

func openBase(p string) (*baseImage, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("base image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("base image: %w", err)
	}
	if _, err := ReadRelease(f, st.Size()); err != nil {
		f.Close()
		return nil, fmt.Errorf("base image %s: %w", p, err)
	}
	fsys, err := ext4.Read(file.New(f, true), st.Size(), 0, 512)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("base image %s: %w", p, err)
	}
	b := &baseImage{f: f, fsys: fsys}
	if err := b.walk("."); err != nil {
		f.Close()
		return nil, fmt.Errorf("base image %s: %w", p, err)
	}
	return b, nil
}

func (b *baseImage) walk(dir string) error {
	entries, err := b.fsys.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		switch {
		case e.Name() == "lost+found" && dir == ".":
		case e.IsDir():
			if err := b.walk(p); err != nil {
				return err
			}
		case p == ReleasePath || p == BrokenPath || p == esp.KernelPath || p == esp.InitrdPath:
		default:
			info, err := e.Info()
			if err != nil {
				return err
			}
			b.files = append(b.files, baseFile{path: p, size: info.Size()})
		}
	}
	return nil
}

func (b *baseImage) read(p string, limit int64) ([]byte, error) {
	r, err := b.fsys.OpenFile(p, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("base image: %s: %w", p, err)
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, limit))
}

func (b *baseImage) Close() error { return b.f.Close() }

// generator makes file content.
type generator struct {
	vocab []string
	zipf  []uint16
}

func newGenerator() *generator {
	v, z := vocabulary()
	return &generator{vocab: v, zipf: z}
}

// content returns the bytes of one file.
func (g *generator) content(fs fileSpec, base *baseImage) ([]byte, error) {
	if fs.data != nil {
		return fs.data, nil
	}
	k := kindOf(fs.path)
	buf := make([]byte, fs.size)
	if fs.base == "" {
		g.fill(buf, k, fs.seed)
		return buf, nil
	}
	old, err := base.read(fs.base, fs.size)
	if err != nil {
		return nil, err
	}
	copy(buf, old)
	for _, e := range fs.edits {
		if e.off >= fs.size {
			continue
		}
		g.fill(buf[e.off:min(fs.size, e.off+e.n)], k, e.seed)
	}
	return buf, nil
}
