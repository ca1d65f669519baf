package omaha_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
)

// The host of testdata/request-*.xml (see testdata/README.md).
const (
	goldenMachine = "639c3d1041b94d7c915c18174eeeb154"
	goldenVersion = "4081.2.0"
)

// flatcarServer is omahad serving Flatcar's app without a trust root: a CrAU payload 4152.2.0
// with an OEM extra for amd64-usr on stable, and another payload for arm64-usr.
type flatcarServer struct {
	*omahatest.Server
	payload, oem, arm []byte
	pkg               admin.Package
}

func newFlatcarServer(t *testing.T) *flatcarServer {
	s := &flatcarServer{Server: omahatest.New(t), payload: omahatest.FlatcarPayload(300<<10, 1),
		oem: []byte("stand-in for oem-azure.gz"), arm: omahatest.FlatcarPayload(200<<10, 2)}
	s.CreateFlatcarApp(t, "{"+omahatest.FlatcarAppID+"}")
	s.pkg = s.PublishFlatcar(t, "stable", "4152.2.0", "amd64-usr", s.payload, omahatest.NamedFile{Name: "oem-azure.gz", Data: s.oem})
	s.PublishFlatcar(t, "stable", "4152.2.0", "arm64-usr", s.arm)
	return s
}

// post sends update_engine's recorded request file with the replacements (old, new, …)
// applied and returns the response body, which must be HTTP 200.
func (s *flatcarServer) post(t *testing.T, file string, repl ...string) []byte {
	t.Helper()
	body := omaha.ReadTestdata(t, file)
	if len(repl) > 0 {
		body = []byte(strings.NewReplacer(repl...).Replace(string(body)))
	}
	code, out := s.Post(t, body)
	if code != http.StatusOK {
		t.Fatalf("%s: HTTP %d: %s", file, code, out)
	}
	return out
}

func parse(t *testing.T, body []byte) *omaha.App {
	t.Helper()
	resp, err := omaha.ParseResponse(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if len(resp.Apps) != 1 {
		t.Fatalf("%d apps in\n%s", len(resp.Apps), body)
	}
	return resp.Apps[0]
}

// sameXML compares documents element by element, attributes in order, indentation aside.
func sameXML(t *testing.T, got []byte, want string) {
	t.Helper()
	if g, w := omaha.Canonical(t, got), omaha.Canonical(t, []byte(want)); g != w {
		t.Errorf("response differs:\n got:\n%s\nwant:\n%s", got, want)
	}
}

// offerXML is the answer to request-updatecheck-idle.xml offering s.pkg: Nebraska's shape for
// Flatcar (update_engine's omaha_request_action.cc) with twinslot's server name and codebase.
func (s *flatcarServer) offerXML(backoff string) string {
	p, e := s.pkg, s.pkg.Extras[0]
	sum, _ := hex.DecodeString(p.SHA256)
	return strings.NewReplacer("URL", s.URL, "SHA256HEX", p.SHA256, "SHA1", p.SHA1, "SIZE", strconv.FormatInt(p.Size, 10),
		"B64SHA256", base64.StdEncoding.EncodeToString(sum), "OEMSHA256", e.SHA256, "OEMSHA1", e.SHA1,
		"OEMSIZE", strconv.FormatInt(e.Size, 10), "BACKOFF", backoff).Replace(`<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="twinslot">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">
    <event status="ok"></event>
    <ping status="ok"></ping>
    <updatecheck status="ok">
      <urls>
        <url codebase="URL/packages/SHA256HEX/"></url>
      </urls>
      <manifest version="4152.2.0">
        <packages>
          <package name="flatcar_production_update.gz" hash="SHA1" hash_sha256="SHA256HEX" size="SIZE" required="true"></package>
          <package name="oem-azure.gz" hash="OEMSHA1" hash_sha256="OEMSHA256" size="OEMSIZE" required="false"></package>
        </packages>
        <actions>
          <action event="postinstall" sha256="B64SHA256"BACKOFF></action>
        </actions>
      </manifest>
    </updatecheck>
  </app>
</response>
`)
}

// TestFlatcarProof plays update_engine's side of a whole update, from its recorded request
// bodies (testdata/request-*.xml: braces in appid and bootid, alephversion, oem, bare
// machineid, 3/2 with every check, 3/0/44 after a rollback), against omahad serving a CrAU
// payload, and checks every response attribute update_engine reads (update_engine's omaha_request_action.cc, ParseResponse).
func TestFlatcarProof(t *testing.T) {
	s := newFlatcarServer(t)

	t.Run("update check: Nebraska's offer, every attribute update_engine reads", func(t *testing.T) {
		out := s.post(t, "request-updatecheck-idle.xml")
		sameXML(t, out, s.offerXML(""))
		a := parse(t, out)
		uc := a.UpdateCheck
		// §1.5: status ok, manifest version, codebase + "/" + first package name, its size,
		// postinstall sha256 (base64 of the whole file); no PollInterval, no backoff switch.
		if uc.Status != omaha.StatusOK || uc.PollInterval != 0 || uc.Manifest.Version != "4152.2.0" {
			t.Fatalf("updatecheck = %+v", uc)
		}
		p, pi := uc.Manifest.Packages[0], uc.Manifest.Postinstall()
		if pi == nil || pi.DisablePayloadBackoff || pi.IsDeltaPayload || pi.MaxFailureCountPerURL != 0 {
			t.Fatalf("postinstall = %+v", pi)
		}
		got := download(t, s.Server, strings.TrimSuffix(uc.URLs[0].Codebase, "/")+"/"+p.Name)
		if !bytes.Equal(got, s.payload) || p.Size != int64(len(got)) || string(got[:4]) != "CrAU" {
			t.Fatalf("downloaded %d bytes, want the published %d-byte CrAU payload (size attribute %d)", len(got), len(s.payload), p.Size)
		}
		sum256, sum1 := sha256.Sum256(got), sha1.Sum(got)
		if pi.SHA256 != base64.StdEncoding.EncodeToString(sum256[:]) || p.SHA256 != hex.EncodeToString(sum256[:]) ||
			p.SHA1 != base64.StdEncoding.EncodeToString(sum1[:]) {
			t.Errorf("hashes: postinstall sha256 %q, hash_sha256 %q, hash %q do not match the file (base64, hex, base64)", pi.SHA256, p.SHA256, p.SHA1)
		}
		// The extra comes from the same codebase, as Flatcar's postinstall fetches it.
		e := uc.Manifest.Packages[1]
		oem := download(t, s.Server, uc.URLs[0].Codebase+e.Name)
		oem256, oem1 := sha256.Sum256(oem), sha1.Sum(oem)
		if !bytes.Equal(oem, s.oem) || e.Required || e.SHA256 != hex.EncodeToString(oem256[:]) || e.SHA1 != base64.StdEncoding.EncodeToString(oem1[:]) {
			t.Errorf("extra %+v does not describe the downloaded %d bytes", e, len(oem))
		}
		// update_engine resumes with Range requests.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, uc.URLs[0].Codebase+p.Name, nil)
		req.Header.Set("Range", "bytes=100-")
		res, err := s.HTTP.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusPartialContent || res.ContentLength != int64(len(s.payload)-100) {
			t.Errorf("Range: HTTP %d, %d bytes", res.StatusCode, res.ContentLength)
		}
	})

	t.Run("events and ping are acknowledged and recorded", func(t *testing.T) {
		for _, file := range []string{"request-event-13-1.xml", "request-event-14-1.xml", "request-event-3-1.xml", "request-ping.xml"} {
			a := parse(t, s.post(t, file))
			if a.Status != omaha.StatusOK || a.UpdateCheck != nil || (a.Ping != nil) == (len(a.Events) == 1) {
				t.Errorf("%s: app %+v", file, a)
			}
		}
		if in := s.Instance(t, goldenMachine); in.State != "installed" || in.GrantedVersion != "4152.2.0" || in.OEM != "azure" {
			t.Errorf("instance after 3/1 = %+v", in)
		}
	})

	t.Run("first check after the reboot: noupdate, complete", func(t *testing.T) {
		out := s.post(t, "request-updatecheck-after-update.xml", `version="`+goldenVersion+`"`, `version="4152.2.0"`,
			`previousversion="3975.2.2"`, `previousversion="`+goldenVersion+`"`)
		sameXML(t, out, `<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="twinslot">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok">
    <event status="ok"></event>
    <ping status="ok"></ping>
    <updatecheck status="noupdate"></updatecheck>
  </app>
</response>
`)
		if in := s.Instance(t, goldenMachine); in.State != "complete" || in.Version != "4152.2.0" {
			t.Errorf("instance = %+v, want complete at 4152.2.0", in)
		}
	})

	t.Run("a rollback (3/0/44) halts the group and is not offered again", func(t *testing.T) {
		s.UpdateGroup(t, "stable", admin.GroupChange{HaltOnFailures: ptr(int64(1))})
		other := strings.Repeat("ab", 16)
		parse(t, s.post(t, "request-updatecheck-idle.xml", goldenMachine, other)) // granted
		a := parse(t, s.post(t, "request-updatecheck-rollback.xml", goldenMachine, other))
		if a.UpdateCheck == nil || a.UpdateCheck.Status != omaha.StatusNoUpdate {
			t.Errorf("check with 3/0/44 = %+v, want noupdate", a.UpdateCheck)
		}
		s.Flush(t)
		if in := s.Instance(t, other); in.State != "rolledback" || in.RollbackVersion != "4152.2.0" {
			t.Errorf("instance = %+v, want rolledback from 4152.2.0", in)
		}
		g, err := s.Admin.Group(t.Context(), s.App, "stable")
		if err != nil || g.Policy.Enabled || !strings.Contains(g.Policy.HaltedReason, "4152.2.0") {
			t.Errorf("group = %+v, %v; want halted by the rollback", g, err)
		}
		var evs []string
		for _, ev := range s.Events(t, other) {
			evs = append(evs, fmt.Sprintf("%d/%d/%d", ev.Type, ev.Result, ev.ErrorCode))
		}
		if strings.Join(evs, " ") != "3/2/0 3/0/44" {
			t.Errorf("events = %v", evs)
		}
		s.UpdateGroup(t, "stable", admin.GroupChange{Enabled: ptr(true), HaltOnFailures: ptr(int64(0))})
	})

	t.Run("DisablePayloadBackoff only when the group asks", func(t *testing.T) {
		s.UpdateGroup(t, "stable", admin.GroupChange{DisablePayloadBackoff: ptr(true)})
		third := strings.Repeat("cd", 16)
		sameXML(t, s.post(t, "request-updatecheck-idle.xml", goldenMachine, third), s.offerXML(` DisablePayloadBackoff="true"`))
		s.UpdateGroup(t, "stable", admin.GroupChange{DisablePayloadBackoff: ptr(false)})
		sameXML(t, s.post(t, "request-updatecheck-idle.xml", goldenMachine, third), s.offerXML(""))
	})
}

func ptr[T any](v T) *T { return &v }

// TestNebraskaAnswers: where Nebraska's answer differs from a plain noupdate, omahad answers as
// Nebraska does (issue 15 item 2). Each case states the whole expected response.
func TestNebraskaAnswers(t *testing.T) {
	s := newFlatcarServer(t)
	offer := func(t *testing.T, out []byte, want []byte) {
		t.Helper()
		a := parse(t, out)
		if a.UpdateCheck == nil || a.UpdateCheck.Status != omaha.StatusOK {
			t.Fatalf("no offer:\n%s", out)
		}
		got := download(t, s.Server, a.UpdateCheck.URLs[0].Codebase+a.UpdateCheck.Manifest.Packages[0].Name)
		if !bytes.Equal(got, want) {
			t.Errorf("offered the wrong board's payload (%d bytes, want %d)", len(got), len(want))
		}
	}
	t.Run("unknown app", func(t *testing.T) {
		out := s.post(t, "request-updatecheck-idle.xml", omahatest.FlatcarAppID, "00000000-0000-4000-8000-000000000000")
		sameXML(t, out, `<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="twinslot">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="{00000000-0000-4000-8000-000000000000}" status="error-unknownApplication"></app>
</response>
`)
	})
	t.Run("unknown track", func(t *testing.T) {
		out := s.post(t, "request-updatecheck-idle.xml", `track="stable"`, `track="nightly"`)
		sameXML(t, out, `<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="twinslot">
  <daystart elapsed_seconds="0"></daystart>
  <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="error-unknownApplicationOrGroup">
    <event status="ok"></event>
    <ping status="ok"></ping>
    <updatecheck status="error-internal"></updatecheck>
  </app>
</response>
`)
	})
	t.Run("no board, no arch: amd64", func(t *testing.T) {
		out := s.post(t, "request-updatecheck-idle.xml", `board="amd64-usr"`, `board=""`)
		sameXML(t, out, s.offerXML(""))
		offer(t, out, s.payload)
	})
	t.Run("no board, os arch arm64: arm64-usr", func(t *testing.T) {
		machine := strings.Repeat("ef", 16)
		out := s.post(t, "request-updatecheck-idle.xml", `board="amd64-usr"`, `board=""`, `platform="CoreOS"`, `platform="CoreOS" arch="arm64"`,
			goldenMachine, machine)
		offer(t, out, s.arm)
		if in := s.Instance(t, machine); in.Board != "arm64-usr" {
			t.Errorf("instance board = %q, want arm64-usr", in.Board)
		}
	})
	t.Run("the client names them", func(t *testing.T) {
		c, err := omaha.NewClient([]string{s.UpdateURL}, omaha.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := omaha.TestHost()
		h.Track = "nightly"
		_, err = c.UpdateCheck(t.Context(), h, omaha.CheckOptions{})
		var ge *omaha.UnknownGroupError
		var oe *omaha.Error
		if !errors.As(err, &ge) || ge.Track != "nightly" || !strings.Contains(err.Error(), `the server knows no group "nightly"`) ||
			!errors.As(err, &oe) || oe.Transient || oe.Status != omaha.StatusUnknownApplicationOrGroup {
			t.Errorf("unknown track: %v", err)
		}
		h.Track, h.AppID = "stable", "00000000-0000-4000-8000-000000000000"
		_, err = c.UpdateCheck(t.Context(), h, omaha.CheckOptions{})
		var ae *omaha.UnknownAppError
		if !errors.As(err, &ae) || !errors.Is(err, omaha.ErrInvalidResponse) || omaha.IsTransient(err) {
			t.Errorf("unknown app: %v", err)
		}
	})
}
