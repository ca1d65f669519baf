package mirror_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/tools/mirror"
)

// crau returns a stand-in for flatcar_production_update.gz: update_engine's payload header
// ("CrAU", major version 1, manifest size 16, big-endian), then bytes derived from seed.
func crau(size int, seed byte) []byte {
	b := make([]byte, size)
	copy(b, "CrAU")
	binary.BigEndian.PutUint64(b[4:], 1)
	binary.BigEndian.PutUint64(b[12:], 16)
	for i := 20; i < size; i++ {
		b[i] = seed + byte(i*7)
	}
	return b
}

// publishFlatcar creates a Flatcar package (payload + extras) on s's app and channel, or skips
// the test when s has no Flatcar package API.
func publishFlatcar(t *testing.T, s *omahatest.Server, channel, version string, payload []byte, extras map[string][]byte) admin.Package {
	t.Helper()
	up := func(name string, data []byte) admin.File {
		f, err := s.Admin.UploadFile(t.Context(), app, bytes.NewReader(data), int64(len(data)))
		var ae *admin.Error
		if errors.As(err, &ae) && (ae.StatusCode == http.StatusNotFound || ae.StatusCode == http.StatusMethodNotAllowed) {
			t.Skipf("this omahad has no Flatcar package API (issue 15 item 1 is not merged here): %v", err)
		}
		if err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
		f.Name = name
		return f
	}
	main := up("flatcar_production_update.gz", payload)
	fp := admin.FlatcarPackage{Version: version, Board: "amd64-usr", Channel: channel, Name: main.Name, Size: main.Size, SHA256: main.SHA256, SHA1: main.SHA1}
	for name, data := range extras {
		fp.Extras = append(fp.Extras, up(name, data))
	}
	p, err := s.Admin.PublishFlatcar(t.Context(), app, fp)
	if err != nil {
		t.Fatalf("publish Flatcar %s: %v", version, err)
	}
	return p
}

// TestMirrorFlatcar: a Flatcar package with an extra file (an OEM image) is mirrored whole:
// both files downloaded and verified, the local channel carries the same package and extra.
func TestMirrorFlatcar(t *testing.T) {
	var d downloads
	w := newWorld(t, d.wrap)
	oem := bytes.Repeat([]byte("oem-azure "), 20000)
	up := publishFlatcar(t, w.up, "beta", "4152.2.0", crau(300_000, 3), map[string][]byte{"oem-azure.gz": oem})
	m := w.mirror(t)
	if err := m.Once(t.Context()); err != nil {
		t.Fatalf("mirror: %v", err)
	}
	got, ok := w.localStable(t)
	if !ok || got.Version != "4152.2.0" || got.SHA256 != up.SHA256 || got.Format != admin.FormatFlatcar {
		t.Fatalf("local stable carries %+v, want Flatcar 4152.2.0 sha256 %s", got, up.SHA256)
	}
	if len(got.Extras) != 1 || got.Extras[0].Name != "oem-azure.gz" || got.Extras[0].SHA256 != fmt.Sprintf("%x", sha256.Sum256(oem)) {
		t.Fatalf("local extras %+v", got.Extras)
	}
	if d.served.Load() != up.Size+int64(len(oem)) {
		t.Fatalf("upstream served %d bytes, want %d (both files once)", d.served.Load(), up.Size+int64(len(oem)))
	}
	if st := m.Stats(); st.Downloads != 2 || st.Published != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := m.Once(t.Context()); err != nil || len(w.events.phase(mirror.PhaseUpToDate)) != 1 {
		t.Fatalf("second round: %v, events %+v", err, w.events.phase(mirror.PhaseUpToDate))
	}
}
