package omaha

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the testdata/response-*.xml files this package generates")

// goldenHost is the host every testdata/request-*.xml describes (the request update_engine builds in omaha_request_action.cc).
func goldenHost() App {
	return App{
		AppID: "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}", Version: "4081.2.0", Track: "stable",
		BootID: "{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}", OEM: "azure", OEMVersion: "2.9.1.1",
		AlephVersion: "3815.2.0", MachineID: "639c3d1041b94d7c915c18174eeeb154",
		MachineAlias: "worker-07", Lang: "en-US", Board: "amd64-usr",
	}
}

var goldenRequests = []struct {
	file        string
	ping, check bool
	events      []Event
}{
	{"request-updatecheck-idle.xml", true, true, []Event{{Type: 3, Result: 2}}},
	{"request-updatecheck-after-update.xml", true, true, []Event{{Type: 3, Result: 2, PreviousVersion: "3975.2.2"}}},
	{"request-updatecheck-rollback.xml", true, true, []Event{{Type: 3, Result: 0, ErrorCode: ErrorCodeRollback}}},
	{"request-ping.xml", true, false, nil},
	{"request-event-13-1.xml", false, false, []Event{{Type: 13, Result: 1}}},
	{"request-event-14-1.xml", false, false, []Event{{Type: 14, Result: 1}}},
	{"request-event-3-1.xml", false, false, []Event{{Type: 3, Result: 1}}},
	{"request-event-3-0-error.xml", false, false, []Event{{Type: 3, Result: 0, ErrorCode: ErrorCodePostinstallRunnerError | ErrorCodeFlagTestOmahaURL}}},
	{"request-event-3-2.xml", false, false, []Event{{Type: 3, Result: 2, PreviousVersion: "0.0.0.0"}}},
}

func TestGoldenRequests(t *testing.T) {
	for _, g := range goldenRequests {
		t.Run(g.file, func(t *testing.T) {
			golden := readTestdata(t, g.file)
			req, err := ParseRequest(bytes.NewReader(golden))
			if err != nil {
				t.Fatal(err)
			}
			if req.Protocol != "3.0" || req.Version != "update_engine-0.4.10" || req.UpdaterVersion != req.Version ||
				req.InstallSource != InstallSourceScheduler || req.IsMachine != 1 {
				t.Errorf("request attributes = %+v", req)
			}
			if want := (OS{Version: "Chateau", Platform: "CoreOS", ServicePack: "4081.2.0_x86_64"}); req.OS == nil || *req.OS != want {
				t.Errorf("os = %+v, want %+v", req.OS, want)
			}
			if len(req.Apps) != 1 {
				t.Fatalf("%d apps, want 1", len(req.Apps))
			}
			a := req.Apps[0]
			if err := a.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			host := goldenHost()
			gotHost := *a
			gotHost.Ping, gotHost.UpdateCheck, gotHost.Events = nil, nil, nil
			if !reflect.DeepEqual(gotHost, host) {
				t.Errorf("app attributes = %+v, want %+v", gotHost, host)
			}
			if (a.Ping != nil) != g.ping || (a.Ping != nil && a.Ping.Active != 1) {
				t.Errorf("ping = %+v, want present=%v active=1", a.Ping, g.ping)
			}
			if (a.UpdateCheck != nil) != g.check {
				t.Errorf("updatecheck present = %v, want %v", a.UpdateCheck != nil, g.check)
			}
			var events []Event
			for _, ev := range a.Events {
				events = append(events, *ev)
			}
			if !reflect.DeepEqual(events, g.events) {
				t.Errorf("events = %+v, want %+v", events, g.events)
			}

			// Our marshaling emits the same elements and attributes, in the same order.
			out, err := req.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := canonical(t, out), canonical(t, golden); got != want {
				t.Errorf("marshaled request differs from update_engine's shape:\n got:\n%s\nwant:\n%s", got, want)
			}
			back, err := ParseRequest(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, req) {
				t.Errorf("round trip changed the request:\n got %+v\nwant %+v", back, req)
			}
		})
	}
}

// goldenPayload is the file the golden "ok" responses describe; its size in them is made up.
const goldenPayload = "twinslot golden payload"

func goldenUpdate() Update {
	return Update{
		Version:     "4152.2.0",
		URLs:        []string{"http://127.0.0.1:8080/packages/2f4ca961977bcd9d/", "https://cdn.example.invalid/amd64-usr/4152.2.0"},
		PackageName: "twinslot_update.tsp",
		Size:        481234567,
		SHA256:      sha256.Sum256([]byte(goldenPayload)),
		SHA1:        sha1.Sum([]byte(goldenPayload)),
		// As Nebraska sends it by default; a twinslot group sends it when it asks for it.
		DisablePayloadBackoff: true,
	}
}

// ourResponses builds each response kind the twinslot server sends, answering the golden
// request named in the comment.
var ourResponses = []struct {
	file  string
	build func(t *testing.T) *Response
}{
	{"response-noupdate.xml", func(t *testing.T) *Response { // request-updatecheck-idle.xml
		r := NewResponse()
		a := r.AddApp(goldenHost().AppID, StatusOK)
		a.Acknowledge(&App{Ping: &Ping{}, Events: []*Event{{}}})
		a.AddUpdateCheck(StatusNoUpdate)
		return r
	}},
	{"response-ok.xml", func(t *testing.T) *Response { // request-updatecheck-idle.xml
		r := NewResponse()
		a := r.AddApp(goldenHost().AppID, StatusOK)
		a.Acknowledge(&App{Ping: &Ping{}, Events: []*Event{{}}})
		if _, err := a.AddUpdate(goldenUpdate()); err != nil {
			t.Fatal(err)
		}
		return r
	}},
	{"response-error-unknown-application.xml", func(t *testing.T) *Response { // any request, appid unknown
		r := NewResponse()
		r.AddApp("{00000000-0000-4000-8000-000000000000}", StatusUnknownApplication)
		return r
	}},
	{"response-error-internal.xml", func(t *testing.T) *Response { // request-updatecheck-idle.xml, store failed
		r := NewResponse()
		a := r.AddApp(goldenHost().AppID, StatusOK)
		a.Acknowledge(&App{Ping: &Ping{}, Events: []*Event{{}}})
		a.AddUpdateCheck(StatusInternalError)
		return r
	}},
	{"response-event-ack.xml", func(t *testing.T) *Response { // request-event-*.xml
		r := NewResponse()
		r.AddApp(goldenHost().AppID, StatusOK).Acknowledge(&App{Events: []*Event{{}}})
		return r
	}},
	{"response-ping-ack.xml", func(t *testing.T) *Response { // request-ping.xml
		r := NewResponse()
		r.AddApp(goldenHost().AppID, StatusOK).Acknowledge(&App{Ping: &Ping{}})
		return r
	}},
}

func TestGoldenResponsesOurs(t *testing.T) {
	for _, g := range ourResponses {
		t.Run(g.file, func(t *testing.T) {
			out, err := g.build(t).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", g.file)
			if *updateGolden {
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			golden := readTestdata(t, g.file)
			if !bytes.Equal(out, golden) {
				t.Fatalf("marshaled response differs from %s (rerun with -update if intended):\n%s", path, out)
			}
			resp, err := ParseResponse(bytes.NewReader(golden))
			if err != nil {
				t.Fatal(err)
			}
			again, err := resp.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, golden) {
				t.Errorf("parse+marshal of %s is not stable:\n%s", g.file, again)
			}
		})
	}
}

// TestGoldenResponsesFlatcar reads responses shaped like Nebraska's (Nebraska's omaha package) as
// update_engine would.
func TestGoldenResponsesFlatcar(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		resp := parseGoldenResponse(t, "response-flatcar-ok.xml")
		if resp.Server != "nebraska" || len(resp.Apps) != 1 {
			t.Fatalf("response = %+v", resp)
		}
		a := resp.App("{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}")
		if a == nil || a.Status != StatusOK || a.Ping.Status != StatusOK || len(a.Events) != 1 || a.Events[0].Status != StatusOK {
			t.Fatalf("app = %+v", a)
		}
		u, err := a.UpdateCheck.Update()
		if err != nil {
			t.Fatal(err)
		}
		want := &Update{
			Version:     "4152.2.0",
			URLs:        []string{"https://updates.example.internal/flatcar/amd64-usr/4152.2.0/", "https://update.release.flatcar-linux.net/amd64-usr/4152.2.0"},
			PackageName: "flatcar_production_update.gz",
			Size:        481234567,
			SHA256:      sha256.Sum256([]byte(goldenPayload)),
			SHA1:        sha1.Sum([]byte(goldenPayload)),
			Extras: []ExtraFile{{Name: "oem-azure.gz", Size: 11534336,
				SHA256: sha256.Sum256([]byte("twinslot golden oem")), SHA1: sha1.Sum([]byte("twinslot golden oem"))}},
			DisablePayloadBackoff: true,
		}
		if !reflect.DeepEqual(u, want) {
			t.Errorf("Update() = %+v, want %+v", u, want)
		}
		wantURLs := []string{
			"https://updates.example.internal/flatcar/amd64-usr/4152.2.0/flatcar_production_update.gz",
			"https://update.release.flatcar-linux.net/amd64-usr/4152.2.0/flatcar_production_update.gz",
		}
		if got := u.DownloadURLs(); !reflect.DeepEqual(got, wantURLs) {
			t.Errorf("DownloadURLs = %q, want %q", got, wantURLs)
		}
		oem := a.UpdateCheck.Manifest.Packages[1]
		if oem.Name != "oem-azure.gz" || oem.Required || oem.Size != 11534336 {
			t.Errorf("second package = %+v", oem)
		}
	})
	t.Run("noupdate", func(t *testing.T) {
		a := parseGoldenResponse(t, "response-flatcar-noupdate.xml").Apps[0]
		if a.UpdateCheck == nil || a.UpdateCheck.Status != StatusNoUpdate {
			t.Fatalf("updatecheck = %+v", a.UpdateCheck)
		}
	})
	t.Run("throttled", func(t *testing.T) {
		a := parseGoldenResponse(t, "response-flatcar-throttled.xml").Apps[0]
		if a.Status != "error-maxUpdatesPerPeriodLimitReached" || !a.Status.IsError() {
			t.Errorf("app status = %q", a.Status)
		}
		if _, err := a.UpdateCheck.Update(); !errors.Is(err, ErrInvalidResponse) {
			t.Errorf("Update() on error-internal = %v, want ErrInvalidResponse", err)
		}
	})
}

// parseGoldenResponse parses a testdata response and checks that marshaling it loses
// nothing this package models.
func parseGoldenResponse(t *testing.T, file string) *Response {
	t.Helper()
	resp, err := ParseResponse(bytes.NewReader(readTestdata(t, file)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseResponse(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, resp) {
		t.Errorf("round trip of %s changed it:\n got %+v\nwant %+v", file, back, resp)
	}
	return resp
}

func readTestdata(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// canonical lists a document's elements and attributes (in order) one per line, ignoring
// indentation and the spelling of quotes and empty elements.
func canonical(t *testing.T, doc []byte) string {
	t.Helper()
	var b strings.Builder
	d := xml.NewDecoder(bytes.NewReader(doc))
	depth := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return b.String()
		}
		if err != nil {
			t.Fatalf("canonical: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			fmt.Fprintf(&b, "%s<%s", strings.Repeat("  ", depth), tok.Name.Local)
			for _, a := range tok.Attr {
				fmt.Fprintf(&b, " %s=%q", a.Name.Local, a.Value)
			}
			b.WriteString(">\n")
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				fmt.Fprintf(&b, "%stext %q\n", strings.Repeat("  ", depth), s)
			}
		case xml.ProcInst:
			fmt.Fprintf(&b, "<?%s %s?>\n", tok.Target, tok.Inst)
		}
	}
}
