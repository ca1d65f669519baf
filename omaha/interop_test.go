package omaha_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/twinslot/twinslot/omaha"
)

// dialectServer serves a fixed Flatcar-dialect response (as Nebraska writes it) and keeps the
// raw request bodies it receives.
func dialectServer(t *testing.T, response string) (url string, bodies func() [][]byte) {
	t.Helper()
	var mu sync.Mutex
	var got [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/update/" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(io.LimitReader(r.Body, omaha.MaxRequestBytes))
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		w.Write(omaha.ReadTestdata(t, response))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v1/update/", func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return append([][]byte(nil), got...)
	}
}

// TestInteropClientWithFlatcarDialect: our client sends what update_engine sends and reads
// what Nebraska answers (issue 4 part 4, second half).
func TestInteropClientWithFlatcarDialect(t *testing.T) {
	url, bodies := dialectServer(t, "response-flatcar-ok.xml")
	c, err := omaha.NewClient([]string{url}, omaha.ClientOptions{UpdaterVersion: "update_engine-0.4.10"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.UpdateCheck(t.Context(), omaha.TestHost(), omaha.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sent := bodies()
	if len(sent) != 1 {
		t.Fatalf("server saw %d requests", len(sent))
	}
	want := omaha.ReadTestdata(t, "request-updatecheck-idle.xml")
	if got, want := omaha.Canonical(t, sent[0]), omaha.Canonical(t, want); got != want {
		t.Errorf("client request is not update_engine's:\n got:\n%s\nwant:\n%s", got, want)
	}

	u := res.Update
	if u == nil {
		t.Fatal("no offer read from a Flatcar ok response")
	}
	wantURLs := []string{
		"https://updates.example.internal/flatcar/amd64-usr/4152.2.0/flatcar_production_update.gz",
		"https://update.release.flatcar-linux.net/amd64-usr/4152.2.0/flatcar_production_update.gz",
	}
	got := u.DownloadURLs()
	if len(got) != 2 || got[0] != wantURLs[0] || got[1] != wantURLs[1] {
		t.Errorf("download URLs = %q, want %q", got, wantURLs)
	}
	sum := sha256.Sum256([]byte("twinslot golden payload"))
	if u.SHA256 != sum || u.Size != 481234567 || u.Version != "4152.2.0" {
		t.Errorf("offer = %+v; want version 4152.2.0, size 481234567, sha256 %s", u, base64.StdEncoding.EncodeToString(sum[:]))
	}

	for _, tc := range []struct {
		name    string
		send    func(*omaha.Client) error
		wantReq string
	}{
		{"download started", func(c *omaha.Client) error {
			return c.Event(t.Context(), omaha.TestHost(), omaha.Event{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess})
		}, "request-event-13-1.xml"},
		{"downloaded", func(c *omaha.Client) error {
			return c.Event(t.Context(), omaha.TestHost(), omaha.Event{Type: omaha.EventTypeUpdateDownloadFinished, Result: omaha.EventResultSuccess})
		}, "request-event-14-1.xml"},
		{"installed", func(c *omaha.Client) error {
			return c.Event(t.Context(), omaha.TestHost(), omaha.Event{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccess})
		}, "request-event-3-1.xml"},
		{"failed", func(c *omaha.Client) error {
			return c.Event(t.Context(), omaha.TestHost(), omaha.ErrorEvent(omaha.ErrorCodePostinstallRunnerError|omaha.ErrorCodeFlagTestOmahaURL))
		}, "request-event-3-0-error.xml"},
		{"ping", func(c *omaha.Client) error { return c.Ping(t.Context(), omaha.TestHost()) }, "request-ping.xml"},
		{"rollback check", func(c *omaha.Client) error {
			_, err := c.UpdateCheck(t.Context(), omaha.TestHost(), omaha.CheckOptions{Rollback: true})
			return err
		}, "request-updatecheck-rollback.xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, bodies := dialectServer(t, "response-flatcar-noupdate.xml")
			c, err := omaha.NewClient([]string{url}, omaha.ClientOptions{UpdaterVersion: "update_engine-0.4.10"})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			sent := bodies()
			if len(sent) != 1 {
				t.Fatalf("server saw %d requests", len(sent))
			}
			if got, want := omaha.Canonical(t, sent[0]), omaha.Canonical(t, omaha.ReadTestdata(t, tc.wantReq)); got != want {
				t.Errorf("request differs from %s:\n got:\n%s\nwant:\n%s", tc.wantReq, got, want)
			}
		})
	}

	t.Run("noupdate", func(t *testing.T) {
		url, _ := dialectServer(t, "response-flatcar-noupdate.xml")
		c, _ := omaha.NewClient([]string{url}, omaha.ClientOptions{})
		res, err := c.UpdateCheck(t.Context(), omaha.TestHost(), omaha.CheckOptions{PreviousVersion: "3975.2.2"})
		if err != nil || res.Update != nil {
			t.Fatalf("UpdateCheck = %+v, %v; want noupdate", res, err)
		}
	})
	t.Run("throttled", func(t *testing.T) {
		url, _ := dialectServer(t, "response-flatcar-throttled.xml")
		c, _ := omaha.NewClient([]string{url}, omaha.ClientOptions{})
		_, err := c.UpdateCheck(t.Context(), omaha.TestHost(), omaha.CheckOptions{})
		if !omaha.IsTransient(err) {
			t.Fatalf("UpdateCheck against a throttling Nebraska = %v, want a transient error", err)
		}
	})
}
