package omaha

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func testUpdate() Update {
	data := []byte("payload bytes")
	return Update{
		Version:     "4152.2.0",
		URLs:        []string{"http://127.0.0.1:8080/packages/abc", "http://mirror.invalid/x/"},
		PackageName: "flatcar_production_update.gz",
		Size:        int64(len(data)),
		SHA256:      sha256.Sum256(data),
		SHA1:        sha1.Sum(data),
	}
}

func TestAddUpdateRefusesWhatUpdateEngineRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(u *Update)
	}{
		{"no version", func(u *Update) { u.Version = "" }},
		{"no urls", func(u *Update) { u.URLs = nil }},
		{"empty url", func(u *Update) { u.URLs = []string{""} }},
		{"no name", func(u *Update) { u.PackageName = "" }},
		{"zero size", func(u *Update) { u.Size = 0 }},
		{"no sha256", func(u *Update) { u.SHA256 = [32]byte{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := testUpdate()
			tt.change(&u)
			a := &App{}
			if _, err := a.AddUpdate(u); !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("AddUpdate error = %v, want ErrInvalidResponse", err)
			}
			if a.UpdateCheck != nil {
				t.Error("AddUpdate set an updatecheck despite the error")
			}
		})
	}
}

func TestUpdateRoundTrip(t *testing.T) {
	want := testUpdate()
	oem := []byte("oem image")
	want.Extras = []ExtraFile{{Name: "oem-azure.gz", Size: int64(len(oem)), SHA256: sha256.Sum256(oem), SHA1: sha1.Sum(oem)}}
	want.DisablePayloadBackoff = true
	resp := NewResponse()
	if _, err := resp.AddApp("{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}", StatusOK).AddUpdate(want); err != nil {
		t.Fatal(err)
	}
	body, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseResponse(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	app := back.App("e96281a6-d1af-4bde-9a0a-97b76e56dc57")
	if app == nil || app.UpdateCheck == nil {
		t.Fatalf("no app/updatecheck in %s", body)
	}
	got, err := app.UpdateCheck.Update()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("round trip = %+v, want %+v", *got, want)
	}
	urls := got.DownloadURLs()
	if urls[0] != "http://127.0.0.1:8080/packages/abc/flatcar_production_update.gz" ||
		urls[1] != "http://mirror.invalid/x/flatcar_production_update.gz" {
		t.Errorf("DownloadURLs = %q", urls)
	}
}

func TestUpdateCheckUpdateErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(uc *UpdateCheck)
	}{
		{"noupdate", func(uc *UpdateCheck) { uc.Status = StatusNoUpdate }},
		{"error status", func(uc *UpdateCheck) { uc.Status = StatusInternalError }},
		{"no manifest", func(uc *UpdateCheck) { uc.Manifest = nil }},
		{"no packages", func(uc *UpdateCheck) { uc.Manifest.Packages = nil }},
		{"no urls", func(uc *UpdateCheck) { uc.URLs = nil }},
		{"no postinstall", func(uc *UpdateCheck) { uc.Manifest.Actions[0].Event = "preinstall" }},
		{"postinstall sha256 hex", func(uc *UpdateCheck) { uc.Manifest.Actions[0].SHA256 = uc.Manifest.Packages[0].SHA256 }},
		{"postinstall sha256 short", func(uc *UpdateCheck) { uc.Manifest.Actions[0].SHA256 = "AAAA" }},
		{"hash_sha256 base64 differs", func(uc *UpdateCheck) {
			uc.Manifest.Packages[0].SHA256 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA8="
		}},
		{"hash_sha256 neither hex nor base64", func(uc *UpdateCheck) { uc.Manifest.Packages[0].SHA256 = "not a digest" }},
		{"extra without hashes", func(uc *UpdateCheck) {
			uc.Manifest.Packages = append(uc.Manifest.Packages, Package{Name: "oem-azure.gz", Size: 5})
		}},
		{"extra named like the payload", func(uc *UpdateCheck) {
			uc.Manifest.Packages = append(uc.Manifest.Packages, Package{Name: uc.Manifest.Packages[0].Name, Size: 5, SHA1: uc.Manifest.Packages[0].SHA1})
		}},
		{"hash_sha256 differs", func(uc *UpdateCheck) {
			uc.Manifest.Packages[0].SHA256 = "00000000000000000000000000000000000000000000000000000000000000ff"
		}},
		{"hash hex", func(uc *UpdateCheck) { uc.Manifest.Packages[0].SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709" }},
		{"zero size", func(uc *UpdateCheck) { uc.Manifest.Packages[0].Size = 0 }},
		{"no name", func(uc *UpdateCheck) { uc.Manifest.Packages[0].Name = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &App{}
			uc, err := a.AddUpdate(testUpdate())
			if err != nil {
				t.Fatal(err)
			}
			tt.change(uc)
			if u, err := uc.Update(); !errors.Is(err, ErrInvalidResponse) {
				t.Fatalf("Update() = %v, %v; want ErrInvalidResponse", u, err)
			}
		})
	}
}

// TestUpdateAcceptsBase64HashSHA256 reads hash_sha256 in base64, as go-omaha's servers write
// it, as well as in hex.
func TestUpdateAcceptsBase64HashSHA256(t *testing.T) {
	uc, err := (&App{}).AddUpdate(testUpdate())
	if err != nil {
		t.Fatal(err)
	}
	uc.Manifest.Packages[0].SHA256 = uc.Manifest.Actions[0].SHA256
	u, err := uc.Update()
	if err != nil || u.SHA256 != testUpdate().SHA256 {
		t.Fatalf("Update() = %v, %v", u, err)
	}
}

func TestAddUpdateBackoff(t *testing.T) {
	for _, disable := range []bool{false, true} {
		u := testUpdate()
		u.DisablePayloadBackoff = disable
		uc, err := (&App{}).AddUpdate(u)
		if err != nil {
			t.Fatal(err)
		}
		body, err := (&Response{Apps: []*App{{AppID: "{x}", UpdateCheck: uc}}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(body, []byte(`DisablePayloadBackoff="true"`)); got != disable {
			t.Errorf("DisablePayloadBackoff=%v: attribute present = %v in\n%s", disable, got, body)
		}
	}
}

func TestAddUpdateOmitsUnknownSHA1(t *testing.T) {
	u := testUpdate()
	u.SHA1 = [20]byte{}
	uc, err := (&App{}).AddUpdate(u)
	if err != nil {
		t.Fatal(err)
	}
	if h := uc.Manifest.Packages[0].SHA1; h != "" {
		t.Errorf("hash = %q, want omitted", h)
	}
}

func TestAcknowledge(t *testing.T) {
	req := &App{Ping: &Ping{Active: 1}, UpdateCheck: &UpdateCheck{}, Events: []*Event{{Type: 3, Result: 2}}}
	a := NewResponse().AddApp("{x}", StatusOK)
	a.Acknowledge(req)
	if a.Ping == nil || a.Ping.Status != StatusOK || len(a.Events) != 1 || a.Events[0].Status != StatusOK {
		t.Errorf("Acknowledge = ping %+v events %+v", a.Ping, a.Events)
	}
	if a.UpdateCheck != nil {
		t.Error("Acknowledge answered the update check")
	}
	b := NewResponse().AddApp("{x}", StatusOK)
	b.Acknowledge(&App{Events: []*Event{{Type: 13, Result: 1}}})
	if b.Ping != nil || len(b.Events) != 1 {
		t.Errorf("event-only Acknowledge = ping %+v events %d", b.Ping, len(b.Events))
	}
}

func TestDigestOf(t *testing.T) {
	d, err := DigestOf(strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != 3 || d.SHA256 != sha256.Sum256([]byte("abc")) || d.SHA1 != sha1.Sum([]byte("abc")) {
		t.Fatalf("DigestOf(abc) = %+v", d)
	}
	if hex.EncodeToString(d.SHA256[:]) != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("sha256 %x", d.SHA256)
	}
}
