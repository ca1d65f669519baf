package mkimage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/twinslot/twinslot/testimages/osimage"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

// Env holds what main takes from the environment.
type Env struct {
	// Cache is the default cache root of `mkimage os`: $TWINSLOT_CACHE, else
	// $HOME/.cache/twinslot. Empty means --cache is required.
	Cache string
}

// DefaultCache is the cache root for the values of $TWINSLOT_CACHE and $HOME.
func DefaultCache(twinslotCache, home string) string {
	switch {
	case twinslotCache != "":
		return twinslotCache
	case home != "":
		return filepath.Join(home, ".cache", "twinslot")
	}
	return ""
}

func runOS(env Env) func(ctx context.Context, stdio cli.IO, args []string) error {
	return func(ctx context.Context, stdio cli.IO, args []string) error {
		fs := stdio.FlagSet("mkimage os", "-o OUTDIR --version V --bin DIR --grub-efi BOOTX64.EFI [flags]", fmt.Sprintf(`
Build a bootable UEFI Debian (%s) host image with A/B /usr. In OUTDIR: usr.img (the ext4
/usr filesystem a payload carries: Debian's /usr, the twinslot binaries and units,
lib/os-release), vmlinuz and initrd.img (also in usr.img as boot/), and unless --usr-only a
sparse disk.img: 1 EFI-SYSTEM (GRUB, a static grub.cfg, slot a's kernel and initrd),
3 USR-A (usr.img, P=1 S=1), 4 USR-B (empty), 9 ROOT (/etc, /var, …).
The Debian tree is bootstrapped once with mmdebstrap and cached under --cache/os/<key>/;
later builds take it from there and need no network. Runs as root (file owners), without
mounts or loop devices. Two builds of one version give a byte-identical usr.img.`, osimage.Suite))
		var o osimage.Options
		fs.StringVar(&o.OutDir, "o", "", "output `directory` (required)")
		fs.StringVar(&o.Version, "version", "", "VERSION of the image (required)")
		fs.StringVar(&o.BuildID, "build-id", osimage.DefaultBuildID, "BUILD_ID of the image")
		fs.StringVar(&o.Board, "board", "amd64-usr", "BOARD of the image")
		fs.StringVar(&o.Marker, "marker", "", "initrd marker (default VERSION-BUILD_ID); the booted host finds it in "+osimage.MarkerPath)
		fs.StringVar(&o.Bin, "bin", "", "`directory` holding updated, updatectl, locksmithd, locksmithctl (required)")
		fs.StringVar(&o.GrubEFI, "grub-efi", "", "GRUB EFI image `file` for ESP:/EFI/BOOT/BOOTX64.EFI (required unless --usr-only)")
		fs.StringVar(&o.Trust, "trust", "", "trust root `file` shipped as /usr/share/twinslot/trust.json")
		fs.StringVar(&o.RootOverlay, "root-overlay", "", "`directory` copied into ROOT last (e.g. etc/twinslot/update.conf)")
		fs.BoolVar(&o.Broken, "broken", false, "enable a unit that fails, so the image fails its health gate")
		fs.BoolVar(&o.UsrOnly, "usr-only", false, "build usr.img, vmlinuz and initrd.img only")
		fs.StringVar(&o.Cache, "cache", env.Cache, "cache root `directory` (default $TWINSLOT_CACHE or ~/.cache/twinslot)")
		asJSON := fs.Bool("json", false, "print the result as JSON")
		filler, disk, slot := &sizeFlag{}, &sizeFlag{n: osimage.DefaultDiskSize}, &sizeFlag{n: osimage.DefaultSlotSize}
		fs.Var(filler, "filler", "add this much version-seeded incompressible data to /usr (K/M/G)")
		fs.Var(disk, "disk-size", "disk size (K/M/G)")
		fs.Var(slot, "slot-size", "size of USR-A and USR-B (K/M/G)")
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return err
		}
		if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
			return err
		}
		o.Filler, o.DiskSize, o.SlotSize = filler.n, disk.n, slot.n
		o.Log = stdio.Stderr
		res, err := osimage.Build(ctx, o)
		var ue *osimage.UsageError
		if errors.As(err, &ue) {
			return cli.Usagef("%s", ue.Msg)
		}
		if err != nil {
			return err
		}
		if *asJSON {
			return cli.PrintJSON(stdio.Stdout, res)
		}
		how := "bootstrapped"
		if res.Cached {
			how = "bootstrap from cache"
		}
		fmt.Fprintf(stdio.Stdout, "%s: /usr %s (build %s, %s), %s\n", res.Usr, res.Version, res.BuildID, res.Board, progress.Bytes(res.UsrSize))
		fmt.Fprintf(stdio.Stdout, "%s, %s: kernel %s, initrd marker %q\n", res.Kernel, res.Initrd, res.KernelRelease, res.Marker)
		if res.Disk != "" {
			fmt.Fprintf(stdio.Stdout, "%s: %s disk, USR-A holds %s, USR-B empty\n", res.Disk, progress.Bytes(res.DiskSize), res.Version)
		}
		fmt.Fprintf(stdio.Stdout, "%s in %s (%s), assembled in %s\n", how, res.BootstrapTime.Round(1e8), res.Bootstrap, res.AssembleTime.Round(1e8))
		return nil
	}
}
