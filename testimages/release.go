package testimages

import (
	"fmt"
	"io"
	"os"

	"github.com/twinslot/twinslot/partition/osrelease"
	"github.com/twinslot/twinslot/partition/slotrelease"
)

// Paths inside the /usr filesystem (it is mounted at /usr, so these are /usr/lib/…).
const (
	ReleasePath = slotrelease.ReleasePath
	BrokenPath  = slotrelease.BrokenPath
	// ReleaseID is the ID= of every twinslot test image.
	ReleaseID = "twinslot"
)

// ErrNoRelease: a slot or image holds no readable twinslot /usr filesystem.
var ErrNoRelease = slotrelease.ErrNoRelease

// Release is what a /usr image says about itself. Host code reads it with
// partition/slotrelease; the alias keeps the test-image API.
type Release = slotrelease.Release

// osRelease renders the lib/os-release file of an image.
func osRelease(r Release) string {
	return fmt.Sprintf("ID=%s\nNAME=\"twinslot test image\"\nVERSION=%s\nVERSION_ID=%s\nBOARD=%s\nPRETTY_NAME=\"twinslot %s (%s)\"\n",
		r.ID, r.Version, r.Version, r.Board, r.Version, r.Board)
}

// ParseRelease parses an os-release file with the one parser (partition/osrelease).
func ParseRelease(b []byte) (Release, error) { return slotrelease.FromOSRelease(b) }

// checkField checks a value that goes into os-release and file names.
func checkField(name, v string) error { return osrelease.CheckField(name, v) }

// ReadRelease reads lib/os-release (and whether lib/twinslot/broken exists) from the ext4
// /usr filesystem at the start of r, which holds size bytes (see slotrelease.Read). The
// error wraps ErrNoRelease when there is no such filesystem or file.
func ReadRelease(r io.ReaderAt, size int64) (Release, error) { return slotrelease.Read(r, size) }

// ReadReleaseFile reads the Release of a /usr image file.
func ReadReleaseFile(path string) (Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return Release{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Release{}, err
	}
	rel, err := ReadRelease(f, st.Size())
	if err != nil {
		return Release{}, fmt.Errorf("%s: %w", path, err)
	}
	return rel, nil
}
