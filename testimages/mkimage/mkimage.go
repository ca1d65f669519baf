package mkimage

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

const summary = "build test disks and /usr images, install into the inactive slot, emulate a boot"

// Main runs mkimage with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is mkimage with defaults from the environment (see Main).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return cli.Run(ctx, "mkimage", summary, Commands(env), args, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Commands are mkimage's subcommands.
func Commands(env Env) []cli.Command {
	return []cli.Command{
		{Name: "disk", Summary: "build a GPT disk image with the Flatcar layout and /usr in USR-A", Run: runDisk},
		{Name: "usr", Summary: "build a standalone /usr filesystem image", Run: runUsr},
		{Name: "install", Summary: "raw-write a /usr image into the inactive slot and mark it to be tried", Run: runInstall},
		{Name: "boot", Summary: "emulate one boot: choose the slot as GRUB does and read its version", Run: runBoot},
		{Name: "os", Summary: "build a bootable UEFI Debian host image with A/B /usr (usr.img, kernel, initrd, disk.img)", Run: runOS(env)},
	}
}

// sizeFlag is a byte size flag accepting K/KiB, M/MiB, G/GiB suffixes.
type sizeFlag struct{ n int64 }

func (s *sizeFlag) String() string {
	if s.n == 0 {
		return ""
	}
	return progress.Bytes(s.n)
}

func (s *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	s.n = n
	return nil
}

// ParseSize parses "512MiB", "6G", "170M" or plain bytes; suffixes are powers of 1024.
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 512MiB, 6GiB or a number of bytes)", v)
	}
	return n * mult, nil
}

// bar returns a progress callback drawing on w, and a function ending the line.
func bar(stdio cli.IO, label string) (func(done, total int64), func()) {
	var b *progress.Bar
	return func(done, total int64) {
			if b == nil {
				b = progress.New(stdio.Stderr, cli.IsTerminal(stdio.Stderr), label, total, nil)
				b.Set(0, "") // the first line, before there is a rate to show
			}
			b.Set(done, "")
		}, func() {
			if b != nil {
				b.Finish()
			}
		}
}

func runDisk(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("mkimage disk", "-o DISK -version V [flags]", fmt.Sprintf(`
Build a sparse GPT disk image with Flatcar's partitions scaled to -size: USR-A and USR-B are
a third of the disk each (%s on the default %s disk), USR-A holds a /usr image of
-version (P=1, successful), USR-B is empty (P=0).`, progress.Bytes(testimages.DefaultUsrSize), progress.Bytes(testimages.DefaultDiskSize)))
	out := fs.String("o", "", "output disk image `path` (required)")
	version := fs.String("version", "", "version of the /usr image in USR-A (required unless -usr)")
	board := fs.String("board", testimages.DefaultBoard, "board of the /usr image")
	usr := fs.String("usr", "", "place this /usr image `file` into USR-A instead of building one")
	size := &sizeFlag{n: testimages.DefaultDiskSize}
	fs.Var(size, "size", "disk size (K/M/G suffixes)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("-o is required")
	}
	if *version == "" && *usr == "" {
		return cli.Usagef("-version is required (or -usr)")
	}
	prog, done := bar(stdio, "build "+*out)
	err = testimages.BuildDisk(ctx, *out, testimages.DiskOptions{Version: *version, Board: *board, Size: size.n, Usr: *usr, Progress: prog})
	done()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, "%s: %s disk, USR-A %s holds %s\n", *out, progress.Bytes(size.n), progress.Bytes(testimages.SlotSize(size.n)), describeUsr(*version, *board, *usr))
	return nil
}

func describeUsr(version, board, usr string) string {
	if usr != "" {
		if rel, err := testimages.ReadReleaseFile(usr); err == nil {
			return fmt.Sprintf("%s %s (from %s)", rel.Version, rel.Board, usr)
		}
		return usr
	}
	return version + " " + board
}

func runUsr(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("mkimage usr", "-o IMAGE -version V [flags]", fmt.Sprintf(`
Build a standalone /usr filesystem image (ext4) whose lib/os-release says ID=twinslot,
VERSION and BOARD. The same flags always give the same bytes. With -base the files of that
image are taken, about -change of them edited, resized, removed or replaced and a few
added, and the filesystem is rebuilt, as a new build of the same OS would be. -broken adds
lib/twinslot/broken: a host running the image fails its health check. -kernel and -initrd
put those files at boot/vmlinuz and boot/initrd.img (/usr/boot/… on a host), where an install
takes the kernel it copies to the ESP.
The default -size (%s) fits the slots of the default disk.`, progress.Bytes(testimages.DefaultUsrSize)))
	out := fs.String("o", "", "output image `path` (required)")
	version := fs.String("version", "", "VERSION of the image (required)")
	board := fs.String("board", testimages.DefaultBoard, "BOARD of the image")
	base := fs.String("base", "", "older /usr image `file` this is a new build of")
	change := fs.Float64("change", 0, "with -base: fraction 0..1 of the files that change")
	kind := fs.String("kind", string(testimages.ChangeEdit), "with -change: edit (small in-place edits, some resizes, removals, replacements) or rewrite (changed files rewritten whole)")
	broken := fs.Bool("broken", false, "mark the image so its health check fails")
	kernel := fs.String("kernel", "", "kernel `file` to carry as boot/vmlinuz")
	initrd := fs.String("initrd", "", "initrd `file` to carry as boot/initrd.img")
	size := &sizeFlag{}
	fs.Var(size, "size", fmt.Sprintf("filesystem size (default %s, or the size of -base)", progress.Bytes(testimages.DefaultUsrSize)))
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if *out == "" || *version == "" {
		return cli.Usagef("-o and -version are required")
	}
	if *change != 0 && *base == "" {
		return cli.Usagef("-change needs -base")
	}
	o := testimages.UsrOptions{Version: *version, Board: *board, Size: size.n, Base: *base, Change: *change, ChangeKind: testimages.ChangeKind(*kind), Broken: *broken}
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{*kernel, &o.Kernel}, {*initrd, &o.Initrd}} {
		if f.path == "" {
			continue
		}
		if *f.dst, err = os.ReadFile(f.path); err != nil {
			return err
		}
	}
	prog, done := bar(stdio, "build "+*out)
	o.Progress = prog
	err = testimages.BuildUsr(ctx, *out, o)
	done()
	if err != nil {
		return err
	}
	rel, err := testimages.ReadReleaseFile(*out)
	if err != nil {
		return err
	}
	note := ""
	if *base != "" {
		note = fmt.Sprintf(", %.0f%% of the files of %s changed (%s)", *change*100, *base, *kind)
	}
	if rel.Broken {
		note += ", broken"
	}
	fmt.Fprintf(stdio.Stdout, "%s: /usr %s %s%s\n", *out, rel.Version, rel.Board, note)
	return nil
}

func runInstall(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("mkimage install", "DISK USR-IMAGE", `
Raw-write USR-IMAGE into the inactive slot of DISK (the partner of the proven slot) and
mark it to be tried on the next boot: successful=0, tries=1, top priority. A test stand-in
for a payload install.`)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 2, 2, "DISK and USR-IMAGE"); err != nil {
		return err
	}
	rel, err := testimages.ReadReleaseFile(pos[1])
	if err != nil {
		return err
	}
	s, err := testimages.InstallRaw(pos[0], pos[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, "installed %s into %v: %v\n", rel.Version, s, s.Attr)
	return nil
}

// BootResult is what `mkimage boot --json` prints.
type BootResult struct {
	Slot       string `json:"slot"`
	Number     int    `json:"number"`
	PartUUID   string `json:"partuuid"`
	Priority   int    `json:"priority"`
	Tries      int    `json:"tries"`
	Successful bool   `json:"successful"`
	Version    string `json:"version"`
	Board      string `json:"board"`
	Broken     bool   `json:"broken"`
}

func runBoot(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("mkimage boot", "DISK [--json]", `
Emulate one boot of DISK: choose the slot exactly as GRUB's gptprio.next does (highest
priority with tries left or successful), decrement its tries and write the table, then
print the slot and the version read from its filesystem.`)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "DISK"); err != nil {
		return err
	}
	s, rel, err := testimages.Boot(pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, BootResult{Slot: s.Label, Number: s.Number, PartUUID: s.PartUUID,
			Priority: s.Attr.Priority(), Tries: s.Attr.Tries(), Successful: s.Attr.Successful(),
			Version: rel.Version, Board: rel.Board, Broken: rel.Broken})
	}
	fmt.Fprintf(stdio.Stdout, "booted %v: version %s %s (%v)%s\n", s, rel.Version, rel.Board, s.Attr, brokenNote(rel))
	return nil
}

func brokenNote(rel testimages.Release) string {
	if rel.Broken {
		return ", broken: its health check will fail"
	}
	return ""
}
