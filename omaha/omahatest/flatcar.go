package omahatest

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
)

// FlatcarAppID is Flatcar's Omaha app id (FLATCAR_RELEASE_APPID's default), bare.
const FlatcarAppID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// FlatcarPayload returns a stand-in for flatcar_production_update.gz of size bytes (≥ 40):
// update_engine's payload header ("CrAU", major version 1, manifest size 16, big-endian)
// followed by bytes derived from seed. It passes omahad's checks; it is not an applicable
// update.
func FlatcarPayload(size int, seed byte) []byte {
	const header = 4 + 8 + 8
	size = max(size, header+16+4)
	b := make([]byte, size)
	copy(b, "CrAU")
	binary.BigEndian.PutUint64(b[4:], 1)
	binary.BigEndian.PutUint64(b[12:], 16)
	for i := header; i < size; i++ {
		b[i] = seed + byte(i*7)
	}
	return b
}

// NamedFile is a file to upload under a name (a Flatcar extra such as oem-azure.gz).
type NamedFile struct {
	Name string
	Data []byte
}

// CreateFlatcarApp creates an app without a trust root (it can hold only Flatcar packages) and
// makes it the app the other helpers use.
func (s *Server) CreateFlatcarApp(t testing.TB, id string) admin.App {
	t.Helper()
	a, err := s.Admin.CreateApp(t.Context(), admin.App{ID: id, Name: "flatcar " + id})
	if err != nil {
		t.Fatalf("omahatest: create Flatcar app: %v", err)
	}
	s.App = a.ID
	return a
}

// PublishFlatcar uploads payload (as flatcar_production_update.gz) and extras to s.App and
// creates the package of version for board, pointing channel at it ("" = publish only).
func (s *Server) PublishFlatcar(t testing.TB, channel, version, board string, payload []byte, extras ...NamedFile) admin.Package {
	t.Helper()
	up := func(name string, data []byte) admin.File {
		f, err := s.Admin.UploadFile(t.Context(), s.App, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("omahatest: upload %s: %v", name, err)
		}
		f.Name = name
		return f
	}
	main := up("flatcar_production_update.gz", payload)
	fp := admin.FlatcarPackage{Version: version, Board: board, Channel: channel, Name: main.Name,
		Size: main.Size, SHA256: main.SHA256, SHA1: main.SHA1}
	for _, e := range extras {
		fp.Extras = append(fp.Extras, up(e.Name, e.Data))
	}
	p, err := s.Admin.PublishFlatcar(t.Context(), s.App, fp)
	if err != nil {
		t.Fatalf("omahatest: publish Flatcar %s: %v", version, err)
	}
	return p
}
