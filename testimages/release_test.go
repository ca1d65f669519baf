package testimages

import (
	"os"
	"path/filepath"
	"testing"
)

// The parser and reader themselves are tested in partition/slotrelease; this checks that what
// the image builder renders parses back.
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
