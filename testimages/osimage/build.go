package osimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	locksmithdist "github.com/twinslot/twinslot/locksmith/dist"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/qemuboot/newc"
	updateddist "github.com/twinslot/twinslot/updated/dist"
)

// ErrNotRoot: the build runs as another user than root.
var ErrNotRoot = errors.New("mkimage os runs as root: the Debian tree is unpacked with its owners (root, messagebus, …) and mkfs.ext4 -d copies them; no mounts or loop devices are used")

// Result says what Build made.
type Result struct {
	Usr           string        `json:"usr"`            // OUTDIR/usr.img
	UsrSize       int64         `json:"usr_size"`       // bytes
	Kernel        string        `json:"kernel"`         // OUTDIR/vmlinuz
	Initrd        string        `json:"initrd"`         // OUTDIR/initrd.img (base + marker)
	Disk          string        `json:"disk,omitempty"` // OUTDIR/disk.img, unless UsrOnly
	DiskSize      int64         `json:"disk_size,omitempty"`
	Version       string        `json:"version"`
	BuildID       string        `json:"build_id"`
	Board         string        `json:"board"`
	Marker        string        `json:"marker"`
	KernelRelease string        `json:"kernel_release"`
	Bootstrap     string        `json:"bootstrap"`        // the cache directory used
	Cached        bool          `json:"bootstrap_cached"` // the bootstrap came from the cache
	BootstrapTime time.Duration `json:"bootstrap_ns"`
	AssembleTime  time.Duration `json:"assemble_ns"`
}

// Build bootstraps (or takes from the cache) the Debian tree and assembles one version of
// the OS from it: usr.img, vmlinuz, initrd.img and, unless UsrOnly, disk.img in OutDir.
// Assembly runs mkfs.ext4 -d, mkfs.vfat and mtools on files: no loop devices, no mounts.
// Each output is written through a temporary file and renamed, so a failed build leaves no
// partial output behind. Bad options are a *UsageError and change nothing.
func Build(ctx context.Context, o Options) (Result, error) {
	if err := o.check(); err != nil {
		return Result{}, err
	}
	if err := needTools(o.UsrOnly); err != nil {
		return Result{}, err
	}
	if os.Geteuid() != 0 {
		return Result{}, ErrNotRoot
	}
	start := time.Now()
	base, err := Bootstrap(ctx, o.Cache, o.Log)
	if err != nil {
		return Result{}, err
	}
	res := Result{Version: o.Version, BuildID: o.BuildID, Board: o.Board, Marker: o.Marker,
		KernelRelease: base.KernelRelease, Bootstrap: base.Dir, Cached: base.Cached, BootstrapTime: time.Since(start)}
	start = time.Now()
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(o.OutDir, ".osimage-work-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)
	root, usr := filepath.Join(work, "root"), filepath.Join(work, "usr")
	if err := os.Mkdir(root, 0o755); err != nil {
		return Result{}, err
	}
	fmt.Fprintf(o.Log, "osimage: unpacking %s\n", base.Tarball)
	if err := run(ctx, o.Log, "tar", "-C", root, "--numeric-owner", "-xpf", base.Tarball); err != nil {
		return Result{}, err
	}
	// /usr leaves the root tree: it becomes usr.img, ROOT keeps an empty mountpoint.
	if err := os.Rename(filepath.Join(root, "usr"), usr); err != nil {
		return Result{}, err
	}
	if err := os.Mkdir(filepath.Join(root, "usr"), 0o755); err != nil {
		return Result{}, err
	}
	initrd, err := markedInitrd(base.Initrd, o.Marker)
	if err != nil {
		return Result{}, err
	}
	if err := fillUsr(usr, o, base, initrd); err != nil {
		return Result{}, err
	}
	res.Usr, res.Kernel, res.Initrd = filepath.Join(o.OutDir, "usr.img"), filepath.Join(o.OutDir, "vmlinuz"), filepath.Join(o.OutDir, "initrd.img")
	if res.UsrSize, err = makeUsrImage(ctx, o, usr, res.Usr); err != nil {
		return Result{}, err
	}
	if err := copyFileAtomic(base.Kernel, res.Kernel); err != nil {
		return Result{}, err
	}
	if err := atomicfile.Write(res.Initrd, 0o644, func(f *os.File) error { _, err := f.Write(initrd); return err }); err != nil {
		return Result{}, err
	}
	if !o.UsrOnly {
		if err := fillRoot(root, o); err != nil {
			return Result{}, err
		}
		res.Disk, res.DiskSize = filepath.Join(o.OutDir, "disk.img"), o.DiskSize
		if err := makeDisk(ctx, o, work, root, res); err != nil {
			return Result{}, err
		}
	}
	res.AssembleTime = time.Since(start)
	return res, nil
}

// Tools are the programs Build runs (Debian packages: tar, e2fsprogs, dosfstools, mtools).
func Tools(usrOnly bool) []string {
	if usrOnly {
		return []string{"tar", "mkfs.ext4", "tune2fs"}
	}
	return []string{"tar", "mkfs.ext4", "tune2fs", "mkfs.vfat", "mmd", "mcopy"}
}

func needTools(usrOnly bool) error {
	var missing []string
	for _, t := range Tools(usrOnly) {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools %v: apt-get install tar e2fsprogs dosfstools mtools", missing)
	}
	return nil
}

func run(ctx context.Context, log io.Writer, name string, args ...string) error {
	return runEnv(ctx, log, nil, name, args...)
}

func runEnv(ctx context.Context, log io.Writer, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	log.Write(out.Bytes())
	return nil
}

// fillUsr adds twinslot to the bootstrap's /usr tree.
func fillUsr(usr string, o Options, base Base, initrd []byte) error {
	type file struct {
		path string
		mode fs.FileMode
		data []byte
	}
	var files []file
	for _, b := range Binaries() {
		data, err := os.ReadFile(filepath.Join(o.Bin, b))
		if err != nil {
			return err
		}
		files = append(files, file{"bin/" + b, 0o755, data})
	}
	for _, u := range []struct {
		fsys   fs.FS
		name   string
		binary string
	}{{updateddist.FS, "updated.service", "updated"}, {locksmithdist.FS, "locksmithd.service", "locksmithd"}} {
		text, err := fs.ReadFile(u.fsys, u.name)
		if err != nil {
			return err
		}
		fixed, err := fixUnit(string(text), u.binary)
		if err != nil {
			return fmt.Errorf("%s: %w", u.name, err)
		}
		files = append(files, file{unitDir + "/" + u.name, 0o644, []byte(fixed)})
	}
	policy, err := fs.ReadFile(updateddist.FS, "com.coreos.update1.conf")
	if err != nil {
		return err
	}
	fixed, err := fixPolicy(string(policy))
	if err != nil {
		return err
	}
	kernel, err := os.ReadFile(base.Kernel)
	if err != nil {
		return err
	}
	files = append(files,
		file{dbusPolicyPath, 0o644, []byte(fixed)},
		file{sysusersPath, 0o644, []byte(sysusersText)},
		file{testimages.ReleasePath, 0o644, []byte(OSRelease(o.Version, o.BuildID, o.Board))},
		file{"boot/vmlinuz", 0o644, kernel},
		file{"boot/initrd.img", 0o644, initrd},
	)
	if o.Trust != "" {
		data, err := os.ReadFile(o.Trust)
		if err != nil {
			return err
		}
		files = append(files, file{TrustPath, 0o644, data})
	}
	// Every image carries the failing unit, enabled, and it runs where lib/twinslot/broken
	// exists. A broken image has that empty file where a good one has an empty placeholder,
	// so both number their inodes and allocate their blocks alike, and share them.
	files = append(files, file{unitDir + "/" + brokenUnit, 0o644, []byte(brokenUnitText)})
	if o.Broken {
		files = append(files, file{testimages.BrokenPath, 0o644, nil})
	} else {
		files = append(files, file{goodPath, 0o644, nil})
	}
	if o.Filler > 0 {
		files = append(files, file{FillerPath, 0o644, Filler(o.Version, o.Board, o.Filler)})
	}
	for _, f := range files {
		p := filepath.Join(usr, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p) // Debian's lib/os-release; a symlink would be written through
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	for _, w := range []string{"updated.service", "locksmithd.service", brokenUnit} {
		if err := symlink("../"+w, filepath.Join(usr, wantsDir, w)); err != nil {
			return err
		}
	}
	return nil
}

// symlink creates link → target, replacing what is at link, creating its directory.
func symlink(target, link string) error {
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	os.Remove(link)
	return os.Symlink(target, link)
}

// Filler is n bytes of incompressible data seeded by version and board: the same for every
// build of a version, different between versions.
func Filler(version, board string, n int64) []byte {
	seed := sha256.Sum256([]byte("twinslot-filler\x00" + board + "\x00" + version))
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// markedInitrd is the base initrd, zero-padded to a 4-byte boundary (the kernel looks for
// a cpio header only there), followed by an uncompressed newc archive that holds the marker
// and a unit, enabled in initrd.target, that copies it to /run/twinslot/initrd-marker.
func markedInitrd(basePath, marker string) ([]byte, error) {
	b, err := os.ReadFile(basePath)
	if err != nil {
		return nil, fmt.Errorf("base initrd: %w", err)
	}
	buf := bytes.NewBuffer(b)
	buf.Write(make([]byte, (4-len(b)%4)%4))
	if err := writeMarkerArchive(buf, marker); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeMarkerArchive(w io.Writer, marker string) error {
	cw := newc.NewWriter(w)
	const sys = "etc/systemd/system/"
	for _, step := range []func() error{
		func() error { return cw.File(markerInInitrd, 0o644, []byte(marker+"\n")) },
		func() error { return cw.File(sys+markerUnit, 0o644, []byte(markerUnitText)) },
		func() error { return cw.Symlink(sys+"initrd.target.wants/"+markerUnit, "../"+markerUnit) },
		cw.Close,
	} {
		if err := step(); err != nil {
			return fmt.Errorf("initrd marker: %w", err)
		}
	}
	return nil
}

// makeUsrImage writes the ext4 /usr image of tree to path and returns its size.
//
// The image is reproducible: every time is Epoch (StampExt4Times after mkfs), mkfs.ext4 -d
// adds entries in name order, and the filesystem UUID derives from board, version and build
// id. Versions of one tree share their blocks: the size and inode count are rounded, the
// directory hash seed derives from the board alone, and the metadata checksums are seeded
// from a board UUID kept in the superblock (metadata_csum_seed) before tune2fs gives the
// filesystem its own UUID, so a new version does not change the checksum of every inode,
// directory and extent block.
//
// Features: no journal (read-only), no orphan_file (1.47) and no resize_inode (never
// grown); metadata_csum stays on, because go-diskfs (and so the agent's slotrelease.Read)
// rejects a superblock without a checksum type.
func makeUsrImage(ctx context.Context, o Options, tree, path string) (int64, error) {
	if err := stampTimes(tree); err != nil {
		return 0, err
	}
	st, err := measure(tree)
	if err != nil {
		return 0, err
	}
	size := UsrImageSize(st.blocks, st.inodes)
	if size > o.SlotSize {
		return 0, fmt.Errorf("%w: the /usr tree needs a %d MiB filesystem, the slot is %d MiB: use a larger --slot-size or a smaller --filler",
			ErrTooBig, size/testimages.MiB, o.SlotSize/testimages.MiB)
	}
	const inodeStep = 8192
	inodes := (st.inodes*5/4 + 1024 + inodeStep - 1) / inodeStep * inodeStep
	env := []string{"E2FSPROGS_FAKE_TIME=" + strconv.Itoa(testimages.Epoch)}
	err = atomicfile.Write(path, 0o644, func(f *os.File) error {
		err := runEnv(ctx, o.Log, env,
			"mkfs.ext4", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0",
			"-N", strconv.FormatInt(inodes, 10),
			"-L", "USR", "-U", seededUUID("csum-seed", o.Board).String(),
			"-O", "^has_journal,^orphan_file,^resize_inode,metadata_csum_seed",
			"-E", "hash_seed="+seededUUID("hash-seed", o.Board).String()+",root_owner=0:0,nodiscard,lazy_itable_init=0",
			"-d", tree, f.Name(), strconv.FormatInt(size/1024, 10)+"k")
		if err != nil {
			return err
		}
		// mkfs copies each file's ctime (and a directory's atime, which reading it
		// changed): set them all to Epoch.
		if err := testimages.StampExt4Times(f, 0); err != nil {
			return err
		}
		return runEnv(ctx, o.Log, env, "tune2fs", "-U", seededUUID("uuid", o.Board, o.Version, o.BuildID).String(), f.Name())
	})
	if err != nil {
		return 0, fmt.Errorf("build usr.img: %w", err)
	}
	if _, err := testimages.ReadReleaseFile(path); err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("build usr.img: the agent could not read the image's os-release: %w", err)
	}
	return size, nil
}

// seededUUID is a UUID derived from label and parts.
func seededUUID(label string, parts ...string) uuid.UUID {
	h := sha256.Sum256([]byte("twinslot-os\x00" + label + "\x00" + strings.Join(parts, "\x00")))
	u, _ := uuid.FromBytes(h[:16])
	u[6] = u[6]&0x0f | 0x40 // version 4 layout, so tools print it as a normal UUID
	u[8] = u[8]&0x3f | 0x80
	return u
}

// treeStats is what sizing a filesystem for a tree needs.
type treeStats struct {
	blocks int64 // 4 KiB blocks of file and directory content
	inodes int64
}

func measure(tree string) (treeStats, error) {
	var st treeStats
	err := filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st.inodes++
		switch {
		case d.IsDir():
			st.blocks++
		case info.Mode().IsRegular():
			st.blocks += (info.Size() + 4095) / 4096
		}
		return nil
	})
	return st, err
}

// UsrImageSize is the size of the /usr filesystem for a tree of blocks 4 KiB blocks of
// content and inodes entries: content plus a quarter, inode tables and 32 MiB of room,
// rounded up to 64 MiB (so versions of similar size have one size and share their block
// group layout).
func UsrImageSize(blocks, inodes int64) int64 {
	need := blocks*4096*5/4 + (inodes*5/4+1024)*256 + 32*testimages.MiB
	const step = 64 * testimages.MiB
	return (need + step - 1) / step * step
}

// stampTimes sets the access and modification time of everything under tree to Epoch.
func stampTimes(tree string) error {
	ts := []unix.Timespec{{Sec: testimages.Epoch}, {Sec: testimages.Epoch}}
	return filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times of %s: %w", p, err)
		}
		return nil
	})
}

func copyFileAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.Write(dst, 0o644, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}

// errNotDir is returned by copyTree for an overlay entry it cannot copy.
var errNotDir = errors.New("not a regular file, directory or symlink")
