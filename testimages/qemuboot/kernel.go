package qemuboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNoKernel: no Linux kernel image was found to boot.
var ErrNoKernel = errors.New("no Linux kernel found")

// Kernel is a kernel image on the host and its modules.
type Kernel struct {
	Path    string // the bzImage (vmlinuz)
	Release string // uname -r: "6.1.0-56-cloud-amd64"; "" when unknown
	Modules string // the host directory lib/modules/RELEASE; "" when it does not exist
}

// FindKernel finds the kernel to boot on the host whose "/" is root: explicit when set (the
// test passes $TWINSLOT_KERNEL), else the newest boot/vmlinuz-* (where Debian's linux-image
// packages install it), else Debian's vmlinuz symlink, else lib/modules/*/vmlinuz (Fedora,
// Arch). Its release comes from the bzImage header, or from the file name.
func FindKernel(root, explicit string) (Kernel, error) {
	var candidates []string
	if explicit != "" {
		candidates = []string{explicit}
	} else {
		boot, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
		slices.Sort(boot)
		slices.Reverse(boot)
		candidates = append(boot, filepath.Join(root, "vmlinuz"))
		mods, _ := filepath.Glob(filepath.Join(root, "lib", "modules", "*", "vmlinuz"))
		candidates = append(candidates, mods...)
	}
	var tried []string
	for _, p := range candidates {
		k, err := kernelAt(root, p)
		if err == nil {
			return k, nil
		}
		tried = append(tried, err.Error())
		if explicit != "" {
			break
		}
	}
	if len(tried) == 0 {
		tried = []string{"no " + filepath.Join(root, "boot", "vmlinuz-*")}
	}
	return Kernel{}, fmt.Errorf("%w (%s): install one (apt-get install linux-image-cloud-amd64) or set TWINSLOT_KERNEL", ErrNoKernel, strings.Join(tried, "; "))
}

func kernelAt(root, p string) (Kernel, error) {
	f, err := os.Open(p)
	if err != nil {
		return Kernel{}, err
	}
	defer f.Close()
	k := Kernel{Path: p}
	if k.Release, err = KernelRelease(f); err != nil {
		// Not a bzImage with a version string: trust the file name.
		name := filepath.Base(p)
		if !strings.HasPrefix(name, "vmlinuz-") {
			return Kernel{}, fmt.Errorf("%s: %w", p, err)
		}
		k.Release = strings.TrimPrefix(name, "vmlinuz-")
	}
	if st, err := os.Stat(filepath.Join(root, "lib", "modules", k.Release)); err == nil && st.IsDir() {
		k.Modules = filepath.Join(root, "lib", "modules", k.Release)
	}
	return k, nil
}

// x86 boot protocol header fields (Documentation/arch/x86/boot.rst).
const (
	bootFlagOff   = 0x1FE // 0xAA55
	headerMagOff  = 0x202 // "HdrS"
	kernelVerOff  = 0x20E // offset of the version string, minus 0x200
	maxVersionLen = 256
)

// KernelRelease reads the release ("6.1.0-56-cloud-amd64") from the version string that an
// x86 bzImage's setup header points at.
func KernelRelease(r io.ReaderAt) (string, error) {
	hdr := make([]byte, 0x210)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return "", fmt.Errorf("not a bzImage: read setup header: %w", err)
	}
	if binary.LittleEndian.Uint16(hdr[bootFlagOff:]) != 0xAA55 || string(hdr[headerMagOff:headerMagOff+4]) != "HdrS" {
		return "", errors.New("not a bzImage: no boot flag or HdrS magic")
	}
	off := int64(binary.LittleEndian.Uint16(hdr[kernelVerOff:]))
	if off == 0 {
		return "", errors.New("bzImage has no kernel version string")
	}
	buf := make([]byte, maxVersionLen)
	n, err := r.ReadAt(buf, off+0x200)
	if n == 0 {
		return "", fmt.Errorf("read bzImage version string: %w", err)
	}
	buf = buf[:n]
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i]
	}
	rel, _, _ := strings.Cut(string(buf), " ")
	if rel == "" || rel == "." || rel == ".." || strings.ContainsAny(rel, "/\x00") || !isPrintable(rel) {
		return "", fmt.Errorf("bzImage version string %q has no release", buf)
	}
	return rel, nil
}

func isPrintable(s string) bool {
	for _, c := range []byte(s) {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
