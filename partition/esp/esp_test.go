package esp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition"
)

func data(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func src(name string, b []byte) Source {
	return Source{Name: name, R: bytes.NewReader(b), Size: int64(len(b))}
}

// oldFiles are the files an ESP holds before the install: both letters' kernel and initrd.
var oldFiles = map[string][]byte{
	"vmlinuz-a": data(300<<10, 1), "initrd-a": data(200<<10, 2),
	"vmlinuz-b": data(310<<10, 3), "initrd-b": data(210<<10, 4),
}

// populate writes the layout with oldFiles below dir.
func populate(t *testing.T, dir string) {
	t.Helper()
	sub := filepath.Join(dir, Subdir)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, b := range oldFiles {
		if err := os.WriteFile(filepath.Join(sub, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot maps each file of dir/twinslot to its SHA-256.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, Subdir))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][32]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, Subdir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = sha256.Sum256(b)
	}
	return m
}

func sums(files map[string][]byte) map[string][32]byte {
	m := map[string][32]byte{}
	for n, b := range files {
		m[n] = sha256.Sum256(b)
	}
	return m
}

func sameSnap(a, b map[string][32]byte) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

var (
	newKernel = data(400<<10, 10)
	newInitrd = data(250<<10+17, 11)
)

// tmpfs mounts a tmpfs of size bytes (with options) at a new directory, skipping unless root.
func tmpfs(t *testing.T, size int64, opts ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs of a given size")
	}
	dir := t.TempDir()
	o := strings.Join(append([]string{fmt.Sprintf("size=%d", size)}, opts...), ",")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", o, "twinslot-esp-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func TestInstallRefuses(t *testing.T) {
	big := Source{Name: KernelPath, R: bytes.NewReader(nil), Size: MaxFileSize + 1}
	for _, tc := range []struct {
		name           string
		kernel, initrd Source
		want           error
	}{
		{"empty kernel", src(KernelPath, nil), src(InitrdPath, newInitrd), ErrNoKernel},
		{"no initrd", src(KernelPath, newKernel), Source{Name: InitrdPath}, ErrNoKernel},
		{"kernel over the limit", big, src(InitrdPath, newInitrd), ErrTooLarge},
		{"short read", src(KernelPath, newKernel), Source{Name: InitrdPath, R: bytes.NewReader(newInitrd), Size: int64(len(newInitrd)) + 1}, ErrIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			populate(t, dir)
			before := snapshot(t, dir)
			err := Install(t.Context(), dir, "b", tc.kernel, tc.initrd)
			var e *Error
			if !errors.Is(err, tc.want) || !errors.As(err, &e) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			after := snapshot(t, dir)
			if tc.want == ErrIO {
				// The kernel went in before the initrd failed; the initrd and letter a did not change.
				before["vmlinuz-b"] = sha256.Sum256(newKernel)
			}
			if !sameSnap(before, after) {
				t.Fatalf("the ESP changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestInstallFull(t *testing.T) {
	dir := tmpfs(t, 2<<20)
	populate(t, dir) // about 1 MiB used
	before := snapshot(t, dir)
	k := data(1200<<10, 12)
	err := Install(t.Context(), dir, "b", src(KernelPath, k), src(InitrdPath, newInitrd))
	var e *Error
	if !errors.Is(err, ErrFull) || !errors.As(err, &e) || e.Need <= e.Free || !strings.Contains(err.Error(), "grow the ESP") {
		t.Fatalf("err = %v (%+v), want ErrFull with need > free", err, e)
	}
	if !sameSnap(before, snapshot(t, dir)) {
		t.Fatal("the ESP changed")
	}
	// What fits goes in.
	if err := Install(t.Context(), dir, "b", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err != nil {
		t.Fatal(err)
	}
}

func TestInstallUnwritable(t *testing.T) {
	var dir string
	if os.Geteuid() == 0 {
		dir = tmpfs(t, 4<<20)
		populate(t, dir)
		if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot remount read-only: %v: %s", err, out)
		}
	} else {
		dir = t.TempDir()
		populate(t, dir)
		os.Chmod(filepath.Join(dir, Subdir), 0o555)
		t.Cleanup(func() { os.Chmod(filepath.Join(dir, Subdir), 0o755) })
	}
	before := snapshot(t, dir)
	err := Install(t.Context(), dir, "a", src(KernelPath, newKernel), src(InitrdPath, newInitrd))
	if !errors.Is(err, ErrUnwritable) || !strings.Contains(err.Error(), "mounted read-write at "+dir) {
		t.Fatalf("err = %v, want ErrUnwritable", err)
	}
	if !sameSnap(before, snapshot(t, dir)) {
		t.Fatal("the ESP changed")
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	populate(t, dir)
	os.WriteFile(filepath.Join(dir, Subdir, ".initrd-b.tmp"), []byte("left by a crash"), 0o644)
	if err := Install(t.Context(), dir, "b", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err != nil {
		t.Fatal(err)
	}
	want := sums(oldFiles)
	want["vmlinuz-b"], want["initrd-b"] = sha256.Sum256(newKernel), sha256.Sum256(newInitrd)
	if got := snapshot(t, dir); !sameSnap(got, want) {
		t.Fatalf("ESP = %v\nwant  %v", got, want)
	}
	// A second run finds both files in place and writes nothing.
	st1, _ := os.Stat(filepath.Join(dir, Subdir, "vmlinuz-b"))
	if err := Install(t.Context(), dir, "b", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(dir, Subdir, "vmlinuz-b"))
	if !os.SameFile(st1, st2) {
		t.Error("the second install replaced vmlinuz-b, which already held the same bytes")
	}
	if err := Install(t.Context(), dir, "c", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err == nil {
		t.Error("letter c accepted")
	}
}

// TestInstallCrash stops Install after each step, as a power cut would, and checks the ESP:
// letter a (the running slot) untouched, each file of letter b old or new but never partial;
// then a second Install completes.
func TestInstallCrash(t *testing.T) {
	errCrash := errors.New("crash")
	newB := map[string][]byte{"vmlinuz-b": newKernel, "initrd-b": newInitrd}
	for _, tc := range []struct {
		at      step
		updated []string // letter b files already new
		temp    string   // temporary file present
	}{
		{stepCleaned, nil, ""},
		{stepKernelTemp, nil, ".vmlinuz-b.tmp"},
		{stepKernel, []string{"vmlinuz-b"}, ""},
		{stepInitrdTemp, []string{"vmlinuz-b"}, ".initrd-b.tmp"},
		{stepInitrd, []string{"vmlinuz-b", "initrd-b"}, ""},
	} {
		t.Run(string(tc.at), func(t *testing.T) {
			dir := t.TempDir()
			populate(t, dir)
			in := installer{dir: dir, after: func(s step) error {
				if s == tc.at {
					return errCrash
				}
				return nil
			}}
			if err := in.install(t.Context(), "b", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err != errCrash {
				t.Fatalf("err = %v", err)
			}
			want := sums(oldFiles)
			for _, n := range tc.updated {
				want[n] = sha256.Sum256(newB[n])
			}
			got := snapshot(t, dir)
			if tc.temp != "" {
				if _, ok := got[tc.temp]; !ok {
					t.Fatalf("no %s after the crash: %v", tc.temp, got)
				}
				delete(got, tc.temp)
			}
			if !sameSnap(got, want) {
				t.Fatalf("after a crash at %s: ESP = %v\nwant %v", tc.at, got, want)
			}
			if err := Install(t.Context(), dir, "b", src(KernelPath, newKernel), src(InitrdPath, newInitrd)); err != nil {
				t.Fatal(err)
			}
			want["vmlinuz-b"], want["initrd-b"] = sha256.Sum256(newKernel), sha256.Sum256(newInitrd)
			if got := snapshot(t, dir); !sameSnap(got, want) {
				t.Fatalf("the second install left %v\nwant %v", got, want)
			}
		})
	}
}

func TestPresent(t *testing.T) {
	dir := t.TempDir()
	if Present(dir) || Present("") {
		t.Fatal("present without twinslot/")
	}
	os.WriteFile(filepath.Join(dir, Subdir), nil, 0o644)
	if Present(dir) {
		t.Fatal("a file named twinslot counts as the layout")
	}
	os.Remove(filepath.Join(dir, Subdir))
	os.Mkdir(filepath.Join(dir, Subdir), 0o755)
	if !Present(dir) {
		t.Fatal("not present with twinslot/")
	}
}

func TestLetter(t *testing.T) {
	for _, tc := range []struct {
		s    partition.Slot
		want string
	}{
		{partition.Slot{Number: 3, Label: "USR-A"}, "a"},
		{partition.Slot{Number: 4, Label: "USR-B"}, "b"},
		{partition.Slot{Number: 5, Label: "USR-C"}, ""},
	} {
		got, err := Letter(tc.s)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("Letter(%v) = %q, %v; want %q", tc.s, got, err, tc.want)
		}
	}
}
