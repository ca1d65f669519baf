package slotrelease_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition/slotrelease"
)

// kernelLike is n pseudo-random bytes with an 8 KiB run of zeros at the start of every MiB:
// mkfs.ext4 -d leaves all-zero blocks unallocated, so the file gets holes and more extents
// than fit in the inode (an extent tree of depth 1).
func kernelLike(n int, seed uint64, holes bool) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	if holes {
		for off := 8192; off+8192 <= n; off += 1 << 20 {
			clear(b[off : off+8192])
		}
	}
	return b
}

// mkfsImage builds an ext4 image of size bytes with Debian's mkfs.ext4 -d (default features:
// extents, 64bit, metadata_csum, flex_bg, dir_index) from files, skipping when mkfs.ext4 is
// missing.
func mkfsImage(t *testing.T, size int64, files map[string][]byte, extra ...string) []byte {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		if mkfs, err = exec.LookPath("/usr/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 not installed (Debian package e2fsprogs)")
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for name, b := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "usr.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-F", "-E", "root_owner=0:0", "-d", root}, extra...)
	if out, err := exec.Command(mkfs, append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	// Say what the test covers: the kernel's extent tree has an index level.
	if debugfs, err := exec.LookPath("debugfs"); err == nil {
		out, _ := exec.Command(debugfs, "-R", "ex /boot/vmlinuz", img).Output()
		if !strings.Contains(string(out), " 1/ 1 ") {
			t.Errorf("boot/vmlinuz has no extent tree of depth 1 in this image:\n%s", out)
		}
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenMkfs(t *testing.T) {
	kernel := kernelLike(20<<20, 1, true)
	initrd := kernelLike(3<<20+123, 2, false)
	files := map[string][]byte{"boot/vmlinuz": kernel, "boot/initrd.img": initrd, "lib/os-release": []byte("ID=twinslot\nVERSION=1\nBOARD=amd64-usr\n")}
	for _, tc := range []struct {
		name  string
		size  int64
		extra []string
	}{
		{"mkfs defaults (1 KiB blocks at this size)", 64 << 20, nil},
		{"4 KiB blocks as in a real /usr", 64 << 20, []string{"-b", "4096"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkfsImage(t, tc.size, files, tc.extra...)
			for name, want := range map[string][]byte{"boot/vmlinuz": kernel, "/boot/initrd.img": initrd} {
				f, err := slotrelease.Open(bytes.NewReader(img), int64(len(img)), name, 256<<20)
				if err != nil {
					t.Fatal(err)
				}
				if f.Size() != int64(len(want)) {
					t.Fatalf("%s: size %d, want %d", name, f.Size(), len(want))
				}
				h := sha256.New()
				if n, err := io.CopyBuffer(h, f, make([]byte, 100_000)); err != nil || n != int64(len(want)) {
					t.Fatalf("%s: copied %d, %v", name, n, err)
				}
				if got := [32]byte(h.Sum(nil)); got != sha256.Sum256(want) {
					t.Fatalf("%s: SHA-256 differs from the file given to mkfs.ext4", name)
				}
			}
			if rel, err := slotrelease.Read(bytes.NewReader(img), int64(len(img))); err != nil || rel.Version != "1" {
				t.Fatalf("Read = %+v, %v", rel, err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	img := mkfsImage(t, 32<<20, map[string][]byte{"boot/vmlinuz": kernelLike(5<<20, 3, true), "lib/os-release": []byte("x")})
	open := func(b []byte, name string, limit int64) error {
		_, err := slotrelease.Open(bytes.NewReader(b), int64(len(b)), name, limit)
		return err
	}
	for _, tc := range []struct {
		name string
		img  []byte
		path string
		want error
	}{
		{"no filesystem", make([]byte, 1<<20), "boot/vmlinuz", slotrelease.ErrNoRelease},
		{"missing file", img, "boot/initrd.img", fs.ErrNotExist},
		{"missing directory", img, "nope/vmlinuz", fs.ErrNotExist},
		{"file as directory", img, "lib/os-release/x", fs.ErrNotExist},
		{"over the limit", img, "boot/vmlinuz", slotrelease.ErrFileTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := open(tc.img, tc.path, 1<<20); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	for _, p := range []string{"boot", "../etc", ""} {
		if err := open(img, p, 1<<30); err == nil {
			t.Errorf("Open(%q) opened something", p)
		}
	}
}

// FuzzOpen corrupts the metadata of a real mkfs.ext4 image: Open and reading the file must
// end in bytes or an error, never a crash or a hang.
func FuzzOpen(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		f.Skip("mkfs.ext4 not installed (Debian package e2fsprogs)")
	}
	dir := f.TempDir()
	root := filepath.Join(dir, "root", "boot")
	if err := os.MkdirAll(root, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "vmlinuz"), kernelLike(2<<20, 4, true), 0o644); err != nil {
		f.Fatal(err)
	}
	img := filepath.Join(dir, "usr.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
		f.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", filepath.Join(dir, "root"), img).CombinedOutput(); err != nil {
		f.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	good, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(1024, good[1024:2048])
	f.Add(2048, good[2048:4096])
	f.Fuzz(func(t *testing.T, off int, patch []byte) {
		if off < 0 || off >= 1<<20 || len(patch) > 64<<10 {
			return
		}
		b := bytes.Clone(good)
		copy(b[off:], patch)
		file, err := slotrelease.Open(bytes.NewReader(b), int64(len(b)), "boot/vmlinuz", 4<<20)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, file)
	})
}
