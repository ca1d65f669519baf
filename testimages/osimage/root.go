package osimage

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/testimages"
)

// fillRoot turns the rest of the bootstrap (everything but /usr) into ROOT: /etc, /var,
// /home, /root and the top-level symlinks (bin → usr/bin, …), an empty /boot for the ESP.
// The host never reaches for the network by itself: no apt sources, no apt timers, no NTP.
func fillRoot(root string, o Options) error {
	// The kernel and initrd live in /usr/boot; /boot is the ESP's mountpoint.
	if err := emptyDir(filepath.Join(root, "boot")); err != nil {
		return err
	}
	for _, p := range []string{"vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old", "etc/apt/sources.list"} {
		if err := os.Remove(filepath.Join(root, p)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := emptyDir(filepath.Join(root, "etc/apt/sources.list.d")); err != nil {
		return err
	}
	sys := filepath.Join(root, "etc/systemd/system")
	files := []struct {
		path, data string
		mode       fs.FileMode
	}{
		{"etc/machine-id", "", 0o444}, // empty: the first boot makes one
		{"etc/hostname", "twinslot\n", 0o644},
		{"etc/fstab", fstabText(), 0o644},
		{networkdConfPath, networkdText, 0o644},
		{"etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf", autologinText, 0o644},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		os.Remove(p)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	const lib = "/lib/systemd/system/"
	links := []struct{ link, target string }{
		{"multi-user.target.wants/systemd-networkd.service", lib + "systemd-networkd.service"},
		{"sockets.target.wants/systemd-networkd.socket", lib + "systemd-networkd.socket"},
		{"network-online.target.wants/systemd-networkd-wait-online.service", lib + "systemd-networkd-wait-online.service"},
		{"getty.target.wants/serial-getty@ttyS0.service", lib + "serial-getty@.service"},
	}
	for _, m := range []string{"systemd-firstboot.service", "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service"} {
		links = append(links, struct{ link, target string }{m, "/dev/null"})
		if err := os.Remove(filepath.Join(sys, "timers.target.wants", m)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	for _, l := range links {
		if err := symlink(l.target, filepath.Join(sys, l.link)); err != nil {
			return err
		}
	}
	if o.RootOverlay != "" {
		if err := copyTree(o.RootOverlay, root); err != nil {
			return fmt.Errorf("--root-overlay: %w", err)
		}
	}
	return nil
}

func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return os.MkdirAll(dir, 0o755)
		}
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies the directories, regular files and symlinks of src over dst, keeping
// their permission bits; files in dst are replaced.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return symlink(target, to)
		case info.Mode().IsRegular():
			os.Remove(to)
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
			return os.Chmod(to, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: %w", p, errNotDir)
		}
	})
}

// makeDisk writes disk.img: the GPT, usr.img in USR-A, the ESP and the ROOT filesystem.
func makeDisk(ctx context.Context, o Options, work, root string, res Result) error {
	parts, err := DiskLayout(o.DiskSize, o.SlotSize)
	if err != nil {
		return err
	}
	esp, usrA, rootPart := parts[0], parts[1], parts[3]
	espImg := filepath.Join(work, "esp.img")
	if err := makeESP(ctx, o, espImg, res); err != nil {
		return err
	}
	return atomicfile.Write(res.Disk, 0o644, func(f *os.File) error {
		if err := f.Truncate(o.DiskSize); err != nil {
			return err
		}
		if err := testimages.WriteTable(f, o.DiskSize, parts); err != nil {
			return err
		}
		for _, c := range []struct {
			src string
			off int64
		}{{res.Usr, usrA.Start}, {espImg, esp.Start}} {
			if err := copySparseFile(ctx, f, c.off, c.src); err != nil {
				return err
			}
		}
		// ROOT is written by mkfs.ext4 straight into the disk at the partition's offset.
		return run(ctx, o.Log, "mkfs.ext4", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "ROOT",
			"-E", "offset="+strconv.FormatInt(rootPart.Start, 10)+",root_owner=0:0,nodiscard",
			"-d", root, f.Name(), strconv.FormatInt(rootPart.Size/1024, 10)+"k")
	})
}

func copySparseFile(ctx context.Context, dst *os.File, off int64, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	return testimages.CopySparse(ctx, dst, off, f, st.Size(), nil)
}

// makeESP builds the FAT32 EFI system partition as a file: GRUB and its static grub.cfg in
// /EFI/BOOT, the first version's kernel and initrd as slot a in /twinslot.
func makeESP(ctx context.Context, o Options, path string, res Result) error {
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(path, ESPSize); err != nil {
		return err
	}
	cfg := filepath.Join(filepath.Dir(path), "grub.cfg")
	if err := os.WriteFile(cfg, []byte(GrubConfig()), 0o644); err != nil {
		return err
	}
	env := []string{"MTOOLS_SKIP_CHECK=1"}
	if err := run(ctx, o.Log, "mkfs.vfat", "-F", "32", "-n", "EFI-SYSTEM", "-i", "B1A7C0DE", path); err != nil {
		return err
	}
	if err := runEnv(ctx, o.Log, env, "mmd", "-i", path, "::/EFI", "::/EFI/BOOT", "::/twinslot"); err != nil {
		return err
	}
	for _, c := range []struct{ src, dst string }{
		{o.GrubEFI, "::/EFI/BOOT/BOOTX64.EFI"},
		{cfg, "::/EFI/BOOT/grub.cfg"},
		{res.Kernel, "::/twinslot/vmlinuz-a"},
		{res.Initrd, "::/twinslot/initrd-a"},
	} {
		if err := runEnv(ctx, o.Log, env, "mcopy", "-i", path, c.src, c.dst); err != nil {
			return err
		}
	}
	return nil
}
