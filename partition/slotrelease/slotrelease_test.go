package slotrelease_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/twinslot/twinslot/partition/slotrelease"
	"github.com/twinslot/twinslot/testimages"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		o    testimages.UsrOptions
	}{
		{"healthy", testimages.UsrOptions{Version: "1.0.1", Board: "arm64-usr", Size: testimages.MinUsrSize}},
		{"broken", testimages.UsrOptions{Version: "2.0.0", Broken: true, Size: testimages.MinUsrSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(dir, tc.name+".img")
			if err := testimages.BuildUsr(t.Context(), img, tc.o); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			board := tc.o.Board
			if board == "" {
				board = testimages.DefaultBoard
			}
			want := slotrelease.Release{ID: testimages.ReleaseID, Version: tc.o.Version, Board: board, Broken: tc.o.Broken}
			if got, err := slotrelease.Read(bytes.NewReader(b), int64(len(b))); err != nil || got != want {
				t.Fatalf("Read = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	img := filepath.Join(t.TempDir(), "usr.img")
	if err := testimages.BuildUsr(t.Context(), img, testimages.UsrOptions{Version: "1.0.0", Size: testimages.MinUsrSize}); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := func(off int, b ...byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], b)
		return c
	}
	for _, tc := range []struct {
		name string
		img  []byte
	}{
		{"empty", nil},
		{"zeros", make([]byte, testimages.MinUsrSize)},
		{"truncated", good[:4096]},
		{"bad magic", corrupt(1024+0x38, 0, 0)},
		{"huge block count", corrupt(1024+0x04, 0xff, 0xff, 0xff, 0x7f)},
		{"huge block size", corrupt(1024+0x18, 30)},
		{"inode size 0", corrupt(1024+0x58, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := slotrelease.Read(bytes.NewReader(tc.img), int64(len(tc.img))); !errors.Is(err, slotrelease.ErrNoRelease) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// FuzzRead corrupts the metadata at the start of a real image (superblock, group
// descriptors, inode table): Read must return a release or an error, never crash.
func FuzzRead(f *testing.F) {
	img := filepath.Join(f.TempDir(), "usr.img")
	if err := testimages.BuildUsr(f.Context(), img, testimages.UsrOptions{Version: "1.0.0", Size: testimages.MinUsrSize}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(0, good[1024:2048])
	f.Add(4096, good[4096:8192])
	f.Fuzz(func(t *testing.T, off int, patch []byte) {
		if off < 0 || off >= 1<<20 || len(patch) > 64<<10 {
			return
		}
		b := bytes.Clone(good)
		copy(b[off:], patch)
		_, _ = slotrelease.Read(bytes.NewReader(b), int64(len(b)))
	})
}
