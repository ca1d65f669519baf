package osimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Suite is the Debian release the images are built from.
const Suite = "bookworm"

// Packages are installed into the bootstrap besides Debian's minbase (Essential and apt).
// The kernel is Debian's cloud flavour: it has virtio-blk, virtio-net and vfat as modules,
// ext4 and the TPM TIS/CRB drivers built in, and far fewer modules than linux-image-amd64.
// dracut builds a systemd initrd, which mounts /usr from mount.usr= before switching root
// (initramfs-tools does not understand mount.usr=). No systemd-timesyncd (not installed
// without recommends), no resolved: the guest never reaches for the network by itself.
func Packages() []string {
	return []string{
		"systemd", "systemd-sysv", "dbus", "udev", "kmod", "e2fsprogs",
		"linux-image-cloud-amd64", "dracut",
	}
}

// dracutConf is written to /etc/dracut.conf.d/10-twinslot.conf by the hook before it builds
// the initrd: not host-only (the build host is not the target), systemd inside (it mounts
// /usr from mount.usr=), only the disk drivers of QEMU and common UEFI machines (virtio,
// AHCI, NVMe; ext4 is built in), nothing for network, consoles or complex storage. A small
// initrd matters under TCG, where every file and udev rule costs boot time.
const dracutConf = `# twinslot: a small systemd initrd that mounts /usr from mount.usr=PARTUUID=...
hostonly="no"
add_dracutmodules+=" systemd "
omit_dracutmodules+=" network network-legacy ifcfg nfs iscsi nbd fcoe multipath lvm dm mdraid crypt btrfs plymouth i18n resume "
drivers=" virtio_blk virtio_scsi virtio_pci ahci nvme sd_mod vfat nls_cp437 nls_iso8859_1 "
filesystems=" ext4 vfat "
compress="gzip"
`

// hookScript runs as mmdebstrap's customize hook on the build host: $1 is the new root, $2
// the directory receiving the kernel, the base initrd and the kernel release. mmdebstrap
// runs with INITRD=No, which makes Debian's /etc/kernel/postinst.d/dracut skip the two
// builds the install would do (the kernel's postinst and dracut's trigger), so the initrd is
// built once, here.
func hookScript() string {
	return `#!/bin/sh
set -eu
root=$1 out=$2
kvers=$(ls "$root/lib/modules")
set -- $kvers
if [ $# -ne 1 ]; then echo "twinslot hook: want exactly one kernel, found: $kvers" >&2; exit 1; fi
kver=$1
mkdir -p "$root/etc/dracut.conf.d"
cat > "$root/etc/dracut.conf.d/10-twinslot.conf" <<'TWINSLOT_EOF'
` + dracutConf + `TWINSLOT_EOF
chroot "$root" depmod -a "$kver"
chroot "$root" dracut --force --kver "$kver" "/boot/initrd.img-$kver"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
printf '%s\n' "$kver" > "$out/kernel-release"
`
}

// Base is a cached bootstrap: the root tree as a tarball, its kernel and base initrd.
type Base struct {
	Dir           string // the cache directory of this bootstrap
	Tarball       string // rootfs.tar (mmdebstrap's tar output, owners numeric)
	Kernel        string // vmlinuz
	Initrd        string // initrd.img, as dracut made it (no marker)
	KernelRelease string // "6.1.0-57-cloud-amd64"
	Cached        bool   // true when it came from the cache
}

// ErrNoMmdebstrap: mmdebstrap, needed for the first build of a bootstrap, is not installed.
var ErrNoMmdebstrap = errors.New("mmdebstrap is not installed (apt-get install mmdebstrap)")

// cacheKey names a bootstrap by everything that goes into it.
func cacheKey() string {
	h := sha256.New()
	for _, part := range []string{"twinslot-os-1", Suite, strings.Join(Packages(), ","), strings.Join(mmdebstrapOpts(), "\x00"), hookScript()} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}

// mmdebstrapOpts are the options that shape the tree (part of the cache key). Documentation
// is left out: a /usr image is downloaded by every host.
func mmdebstrapOpts() []string {
	opts := []string{"--variant=minbase", "--include=" + strings.Join(Packages(), ",")}
	for _, p := range []string{"/usr/share/man/*", "/usr/share/info/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/lintian/*"} {
		opts = append(opts, "--dpkgopt=path-exclude="+p)
	}
	return append(opts, "--dpkgopt=path-include=/usr/share/doc/*/copyright")
}

// BaseDir is where the bootstrap lives under the cache root.
func BaseDir(cache string) string { return filepath.Join(cache, "os", cacheKey()) }

// Bootstrap returns the cached bootstrap under cache (the cache root, e.g.
// ~/.cache/twinslot), building it with mmdebstrap first when it is missing. The build goes to
// a temporary directory beside it that is renamed into place when complete, so an
// interrupted build leaves nothing that looks cached; a cached bootstrap is never fetched
// again. Build output goes to log.
func Bootstrap(ctx context.Context, cache string, log io.Writer) (Base, error) {
	dir := BaseDir(cache)
	b := Base{Dir: dir, Tarball: filepath.Join(dir, "rootfs.tar"), Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	if rel, err := os.ReadFile(filepath.Join(dir, "kernel-release")); err == nil {
		b.KernelRelease, b.Cached = strings.TrimSpace(string(rel)), true
		return b, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return Base{}, ErrNoMmdebstrap
	}
	if os.Geteuid() != 0 {
		return Base{}, fmt.Errorf("bootstrap: %w", ErrNotRoot)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return Base{}, fmt.Errorf("bootstrap cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+filepath.Base(dir)+"-")
	if err != nil {
		return Base{}, fmt.Errorf("bootstrap cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	hook := filepath.Join(tmp, "hook.sh")
	if err := os.WriteFile(hook, []byte(hookScript()), 0o755); err != nil {
		return Base{}, err
	}
	args := append(mmdebstrapOpts(), "--mode=root", "--format=tar",
		"--customize-hook="+hook+` "$1" `+tmp,
		Suite, filepath.Join(tmp, "rootfs.tar"))
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "INITRD=No")
	if err := cmd.Run(); err != nil {
		return Base{}, fmt.Errorf("bootstrap: mmdebstrap %s: %w (see its output above; the mirror is the one in /etc/apt/sources.list.d)", Suite, err)
	}
	rel, err := os.ReadFile(filepath.Join(tmp, "kernel-release"))
	if err != nil || len(bytes.TrimSpace(rel)) == 0 {
		return Base{}, fmt.Errorf("bootstrap: the customize hook left no kernel release: %v", err)
	}
	if err := os.Remove(hook); err != nil {
		return Base{}, err
	}
	if err := syncDir(tmp); err != nil {
		return Base{}, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Base{}, fmt.Errorf("bootstrap cache: %w", err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return Base{}, err
	}
	b.KernelRelease = strings.TrimSpace(string(rel))
	return b, nil
}

// syncDir fsyncs every regular file directly in dir, then dir itself.
func syncDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := syncPath(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return syncPath(dir)
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
