package server_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

func fileOf(name string, data []byte) admin.File {
	s256, s1 := sha256.Sum256(data), sha1.Sum(data)
	return admin.File{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(s256[:]), SHA1: base64.StdEncoding.EncodeToString(s1[:])}
}

func flatcarPackage(version string, f admin.File, extras ...admin.File) admin.FlatcarPackage {
	return admin.FlatcarPackage{Version: version, Board: "amd64-usr", Channel: "stable", Name: f.Name, Size: f.Size,
		SHA256: f.SHA256, SHA1: f.SHA1, Extras: extras}
}

// TestFlatcarPublishRefusals: omahad checks what it is told about a Flatcar package against the
// uploaded files, and records nothing when a check fails; a trustless app refuses twinslot
// payloads, whose signature check stays.
func TestFlatcarPublishRefusals(t *testing.T) {
	s := omahatest.New(t)
	s.CreateFlatcarApp(t, omahatest.FlatcarAppID)
	ctx := t.Context()
	upload := func(name string, data []byte) admin.File {
		t.Helper()
		f, err := s.Admin.UploadFile(ctx, s.App, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if want := fileOf(name, data); f.SHA256 != want.SHA256 || f.SHA1 != want.SHA1 || f.Size != want.Size {
			t.Fatalf("upload answered %+v, want %+v", f, want)
		}
		f.Name = name
		return f
	}
	good := omahatest.FlatcarPayload(64<<10, 3)
	main := upload("flatcar_production_update.gz", good)
	oem := upload("oem-azure.gz", []byte("oem"))
	v2 := omahatest.FlatcarPayload(64<<10, 4)
	binary.BigEndian.PutUint64(v2[4:], 2)
	huge := omahatest.FlatcarPayload(64<<10, 5)
	binary.BigEndian.PutUint64(huge[12:], 1<<40)
	gz := append([]byte{0x1f, 0x8b, 8, 0}, good[4:]...)
	notUploaded := fileOf("flatcar_production_update.gz", omahatest.FlatcarPayload(64<<10, 9))

	for _, tc := range []struct {
		name string
		p    admin.FlatcarPackage
		want error
		msg  string
	}{
		{"gzip, not CrAU", flatcarPackage("1.0.0", upload("flatcar_production_update.gz", gz)), admin.ErrRefused, `not "CrAU"`},
		{"major version 2", flatcarPackage("1.0.0", upload("flatcar_production_update.gz", v2)), admin.ErrRefused, "major version 2"},
		{"manifest larger than the file", flatcarPackage("1.0.0", upload("flatcar_production_update.gz", huge)), admin.ErrRefused, "manifest size"},
		{"size differs", func() admin.FlatcarPackage { p := flatcarPackage("1.0.0", main); p.Size++; return p }(), admin.ErrRefused, "size"},
		{"sha1 differs", func() admin.FlatcarPackage { p := flatcarPackage("1.0.0", main); p.SHA1 = oem.SHA1; return p }(), admin.ErrRefused, "sha1"},
		{"extra sha1 differs", flatcarPackage("1.0.0", main, admin.File{Name: oem.Name, Size: oem.Size, SHA256: oem.SHA256, SHA1: main.SHA1}), admin.ErrRefused, "oem-azure.gz"},
		{"not uploaded", flatcarPackage("1.0.0", notUploaded), admin.ErrNotFound, "was not uploaded"},
		{"extra not uploaded", flatcarPackage("1.0.0", main, fileOf("oem-gce.gz", []byte("gce"))), admin.ErrNotFound, "oem-gce.gz"},
		{"sha1 in hex", func() admin.FlatcarPackage {
			p := flatcarPackage("1.0.0", main)
			p.SHA1 = strings.Repeat("ab", 20)
			return p
		}(), admin.ErrBadRequest, "base64"},
		{"no version", flatcarPackage("", main), admin.ErrBadRequest, "version"},
		{"unknown channel", func() admin.FlatcarPackage { p := flatcarPackage("1.0.0", main); p.Channel = "lts"; return p }(), admin.ErrBadRequest, "channel"},
		{"extra named like the payload", flatcarPackage("1.0.0", main, admin.File{Name: main.Name, Size: oem.Size, SHA256: oem.SHA256, SHA1: oem.SHA1}), admin.ErrBadRequest, "twice"},
		{"external URL not ending in the name", func() admin.FlatcarPackage {
			p := flatcarPackage("1.0.0", main)
			p.URL = "https://cdn.example/1.0.0/"
			return p
		}(), admin.ErrBadRequest, "must end in the file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Admin.PublishFlatcar(ctx, s.App, tc.p)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
	if ps, err := s.Admin.Packages(ctx, s.App); err != nil || len(ps) != 0 {
		t.Fatalf("packages after refusals = %+v, %v; want none", ps, err)
	}

	// A twinslot payload needs a trust root this app does not have.
	key := payloadtest.NewKey(t, "")
	_, err := s.TryPublish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	if !errors.Is(err, admin.ErrConflict) || !strings.Contains(err.Error(), "set-trust") {
		t.Fatalf("twinslot payload into a Flatcar-only app: %v", err)
	}
}

// TestFlatcarExternal: an external Flatcar package is offered from its URL's directory, with
// its extras under the same codebase, on SQLite and PostgreSQL.
func TestFlatcarExternal(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var opts []omahatest.Option
			if backend == "postgres" {
				opts = append(opts, omahatest.WithDSN(omahatest.PostgresDSN(t)))
			}
			s := omahatest.New(t, opts...)
			s.CreateFlatcarApp(t, omahatest.FlatcarAppID)
			p := flatcarPackage("4152.2.0", fileOf("flatcar_production_update.gz", []byte("never fetched by omahad")),
				fileOf("oem-azure.gz", []byte("oem")))
			p.URL = "https://mirror.example/amd64-usr/4152.2.0/flatcar_production_update.gz"
			got, err := s.Admin.PublishFlatcar(t.Context(), s.App, p)
			if err != nil || got.Format != admin.FormatFlatcar || got.URL != p.URL || len(got.Extras) != 1 {
				t.Fatalf("PublishFlatcar = %+v, %v", got, err)
			}
			again, err := s.Admin.PublishFlatcar(t.Context(), s.App, p)
			if err != nil || again.ID != got.ID {
				t.Fatalf("publishing again = %+v, %v; want the same package", again, err)
			}
			h := s.Host(t, "stable", "4081.2.0")
			u := h.Check(t)
			if u == nil || len(u.URLs) != 1 || u.URLs[0] != "https://mirror.example/amd64-usr/4152.2.0/" || len(u.Extras) != 1 ||
				u.Extras[0].Name != "oem-azure.gz" || u.DisablePayloadBackoff {
				t.Fatalf("offer = %+v", u)
			}
			body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {"Bearer " + s.ReadOnlyToken}})
			if want := "<td>stable</td><td>amd64-usr</td><td>4152.2.0</td><td>flatcar + 1 extra</td>"; resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
				t.Errorf("dashboard (%d) lacks %q", resp.StatusCode, want)
			}
			st := s.Status(t)
			if pk := st.Channels[2].Packages["amd64-usr"]; pk.Format != admin.FormatFlatcar || pk.Version != "4152.2.0" {
				t.Errorf("status stable = %+v", pk)
			}
		})
	}
}
