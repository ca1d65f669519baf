package omaha_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// flatcarAppID is the appid in testdata/request-*.xml: Flatcar's default, used here as the
// server's app so the files can be posted unchanged.
const flatcarAppID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// TestInteropFlatcarRequestsAgainstServer posts update_engine's exact request bytes to the
// real /v1/update/ handler (issue 4 part 4) and checks each answer has what update_engine
// needs (update_engine's omaha_request_action.cc, ParseResponse); the offer is then downloaded and its hashes checked in the
// encodings Flatcar's consumers use.
func TestInteropFlatcarRequestsAgainstServer(t *testing.T) {
	s := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	s.CreateApp(t, "{"+flatcarAppID+"}", payloadtest.TrustRoot(t, 1, 0, key))
	s.Publish(t, "stable", s.BuildPayload(t, "4152.2.0", key))

	post := func(t *testing.T, file string) *omaha.App {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.UpdateURL, bytes.NewReader(omaha.ReadTestdata(t, file)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/xml") // what update_engine sends
		res, err := s.HTTP.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d: %s", file, res.StatusCode, body)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/xml") {
			t.Errorf("%s: Content-Type %q", file, ct)
		}
		resp, err := omaha.ParseResponse(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v\n%s", file, err, body)
		}
		// update_engine reads /response/app and takes the first one.
		if len(resp.Apps) != 1 || resp.Apps[0].AppID != "{"+flatcarAppID+"}" || resp.Apps[0].Status != omaha.StatusOK {
			t.Fatalf("%s: apps %+v\n%s", file, resp.Apps, body)
		}
		return resp.Apps[0]
	}

	t.Run("update check gets a complete offer", func(t *testing.T) {
		a := post(t, "request-updatecheck-idle.xml")
		if a.Ping == nil || a.Ping.Status != omaha.StatusOK || len(a.Events) != 1 || a.Events[0].Status != omaha.StatusOK {
			t.Errorf("ping/event not acknowledged: %+v", a)
		}
		uc := a.UpdateCheck
		if uc == nil || uc.Status != omaha.StatusOK || uc.Manifest == nil {
			t.Fatalf("updatecheck = %+v, want status ok with a manifest", uc)
		}
		m := uc.Manifest
		if m.Version != "4152.2.0" || len(uc.URLs) == 0 || len(m.Packages) == 0 {
			t.Fatalf("manifest %+v urls %+v", m, uc.URLs)
		}
		p := m.Packages[0]
		pi := m.Postinstall()
		if p.Name == "" || p.Size <= 0 || pi == nil || pi.SHA256 == "" {
			t.Fatalf("package %+v postinstall %+v: update_engine needs name, size > 0 and postinstall sha256", p, pi)
		}
		// Download it the way update_engine builds the URL: codebase + "/" + name.
		payload := download(t, s, strings.TrimSuffix(uc.URLs[len(uc.URLs)-1].Codebase, "/")+"/"+p.Name)
		if int64(len(payload)) != p.Size {
			t.Errorf("downloaded %d bytes, package size %d", len(payload), p.Size)
		}
		sum256, sum1 := sha256.Sum256(payload), sha1.Sum(payload)
		if want := base64.StdEncoding.EncodeToString(sum256[:]); pi.SHA256 != want {
			t.Errorf("postinstall sha256 = %q, want base64 %q", pi.SHA256, want)
		}
		if want := hex.EncodeToString(sum256[:]); p.SHA256 != want {
			t.Errorf("package hash_sha256 = %q, want hex %q", p.SHA256, want)
		}
		if want := base64.StdEncoding.EncodeToString(sum1[:]); p.SHA1 != want {
			t.Errorf("package hash = %q, want base64 SHA-1 %q", p.SHA1, want)
		}
		if u, err := uc.Update(); err != nil || u.Size != p.Size {
			t.Errorf("Update() = %+v, %v", u, err)
		}
	})

	for _, tc := range []struct {
		file        string
		ping, check bool
		events      int
	}{
		{"request-event-13-1.xml", false, false, 1},
		{"request-event-14-1.xml", false, false, 1},
		{"request-event-3-1.xml", false, false, 1},
		{"request-ping.xml", true, false, 0},
		{"request-event-3-0-error.xml", false, false, 1},
		{"request-event-3-2.xml", false, false, 1},
		{"request-updatecheck-after-update.xml", true, true, 1},
		{"request-updatecheck-rollback.xml", true, true, 1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			a := post(t, tc.file)
			if (a.Ping != nil) != tc.ping || (a.Ping != nil && a.Ping.Status != omaha.StatusOK) {
				t.Errorf("ping ack = %+v, want present=%v", a.Ping, tc.ping)
			}
			if len(a.Events) != tc.events {
				t.Errorf("%d event acks, want %d", len(a.Events), tc.events)
			}
			if (a.UpdateCheck != nil) != tc.check {
				t.Fatalf("updatecheck = %+v, want present=%v", a.UpdateCheck, tc.check)
			}
			// update_engine accepts only ok and noupdate.
			if tc.check && a.UpdateCheck.Status != omaha.StatusOK && a.UpdateCheck.Status != omaha.StatusNoUpdate {
				t.Errorf("updatecheck status %q", a.UpdateCheck.Status)
			}
		})
	}

	t.Run("everything was recorded", func(t *testing.T) {
		const machine = "639c3d1041b94d7c915c18174eeeb154"
		in := s.Instance(t, machine)
		if in.Version != "4081.2.0" || in.Alias != "worker-07" {
			t.Errorf("instance = %+v", in)
		}
		// 3 checks and 5 event requests carry one event each, in this order; the ping none.
		want := []string{"3/2/0", "13/1/0", "14/1/0", "3/1/0", "3/0/268435461", "3/2/0", "3/2/0", "3/0/44"}
		var got []string
		for _, ev := range s.Events(t, machine) {
			got = append(got, fmt.Sprintf("%d/%d/%d", ev.Type, ev.Result, ev.ErrorCode))
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("events recorded = %v, want %v", got, want)
		}
	})
}

// TestInteropClientAgainstServer runs our client against the real server.
func TestInteropClientAgainstServer(t *testing.T) {
	s := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	s.CreateApp(t, "{"+flatcarAppID+"}", payloadtest.TrustRoot(t, 1, 0, key))
	s.Publish(t, "stable", s.BuildPayload(t, "4152.2.0", key))
	c, err := omaha.NewClient([]string{s.UpdateURL}, omaha.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := omaha.TestHost()
	res, err := c.UpdateCheck(t.Context(), h, omaha.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Update == nil || res.Update.Version != "4152.2.0" {
		t.Fatalf("offer = %+v", res.Update)
	}
	payload := download(t, s, res.Update.DownloadURLs()[0])
	if sha256.Sum256(payload) != res.Update.SHA256 || int64(len(payload)) != res.Update.Size {
		t.Error("downloaded payload does not match the offer's size and SHA-256")
	}
	for _, ev := range []omaha.Event{
		{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess},
		{Type: omaha.EventTypeUpdateDownloadFinished, Result: omaha.EventResultSuccess},
		{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccess},
	} {
		if err := c.Event(t.Context(), h, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Ping(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	h.Version = "4152.2.0"
	if res, err := c.UpdateCheck(t.Context(), h, omaha.CheckOptions{PreviousVersion: "4081.2.0"}); err != nil || res.Update != nil {
		t.Fatalf("check after the update = %+v, %v; want noupdate", res, err)
	}
	if in := s.Instance(t, h.MachineID); in.Version != "4152.2.0" || in.State != "complete" {
		t.Errorf("instance = %+v, want complete at 4152.2.0", in)
	}

	h.AppID = "00000000-0000-4000-8000-000000000000"
	_, err = c.UpdateCheck(t.Context(), h, omaha.CheckOptions{})
	var oe *omaha.Error
	if !errors.As(err, &oe) || oe.Transient || oe.Status != omaha.StatusUnknownApplication || oe.Code() != omaha.ErrorCodeOmahaResponseInvalid {
		t.Errorf("check for an unknown app = %v, want permanent error-unknownApplication (code 34)", err)
	}
}

func download(t *testing.T, s *omahatest.Server, url string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.HTTP.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", url, res.StatusCode)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
