package testimages

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    Release
		wantErr string
	}{
		{name: "empty", in: "", wantErr: "ID is empty"},
		{name: "no board", in: "ID=twinslot\nVERSION=1\n", wantErr: "BOARD is empty"},
		{name: "not key=value", in: "ID=twinslot\nhello\n", wantErr: "not KEY=VALUE"},
		{name: "bad version", in: "ID=twinslot\nVERSION=\"1 2\"\nBOARD=x\n", wantErr: "may only hold"},
		{name: "too long", in: strings.Repeat("#", maxReleaseFile+1), wantErr: "more than"},
		{name: "ours", in: osRelease(Release{ID: "twinslot", Version: "1.0.1", Board: "amd64-usr"}), want: Release{ID: "twinslot", Version: "1.0.1", Board: "amd64-usr"}},
		{name: "quotes and comments", in: "# c\n\nID='twinslot'\nVERSION=\"3.2.1\"\nBOARD=arm64-usr\nOTHER=x=y\n", want: Release{ID: "twinslot", Version: "3.2.1", Board: "arm64-usr"}},
		{name: "last wins", in: "ID=a\nID=b\nVERSION=1\nBOARD=c\n", want: Release{ID: "b", Version: "1", Board: "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRelease([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
		})
	}
}

func TestReadReleaseErrors(t *testing.T) {
	img := filepath.Join(t.TempDir(), "usr.img")
	buildUsrT(t, img, UsrOptions{Version: "1.0.0", Size: MinUsrSize})
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
		{"zeros", make([]byte, MinUsrSize)},
		{"truncated", good[:4096]},
		{"bad magic", corrupt(1024+0x38, 0, 0)},
		{"huge block count", corrupt(1024+0x04, 0xff, 0xff, 0xff, 0x7f)},
		{"huge block size", corrupt(1024+0x18, 30)},
		{"inode size 0", corrupt(1024+0x58, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadRelease(bytes.NewReader(tc.img), int64(len(tc.img))); !errors.Is(err, ErrNoRelease) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func FuzzParseRelease(f *testing.F) {
	f.Add([]byte(osRelease(Release{ID: "twinslot", Version: "1.0.0", Board: "amd64-usr"})))
	if b, err := os.ReadFile(filepath.Join("testdata", "os-release")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRelease(b)
		if err != nil {
			return
		}
		// What parses renders and parses back to the same release.
		again, err := ParseRelease([]byte(osRelease(r)))
		if err != nil || again != r {
			t.Fatalf("%+v re-parsed as %+v, %v", r, again, err)
		}
	})
}

// FuzzReadRelease corrupts the metadata at the start of a real image (superblock, group
// descriptors, inode table): ReadRelease must return a release or an error, never crash.
func FuzzReadRelease(f *testing.F) {
	img := filepath.Join(f.TempDir(), "usr.img")
	if err := BuildUsr(f.Context(), img, UsrOptions{Version: "1.0.0", Size: MinUsrSize}); err != nil {
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
		_, _ = ReadRelease(bytes.NewReader(b), int64(len(b)))
	})
}
