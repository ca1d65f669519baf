package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
)

// getJSON reads an API answer into v with the read-only token and returns the status code.
func getJSON(t *testing.T, s *omahatest.Server, path string, v any) int {
	t.Helper()
	body, resp := get(t, s, s.URL+path, http.Header{"Authorization": {"Bearer " + s.ReadOnlyToken}})
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, body)
		}
	}
	return resp.StatusCode
}

// TestDashboardAPI checks the read endpoints the dashboard's script uses: hosts per version over
// time, instance search and one instance; and that the page runs no inline script.
func TestDashboardAPI(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	s.Publish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	var hosts []*omahatest.Host
	for i := range 3 {
		h := s.Host(t, "stable", "1.0.0")
		h.Alias = fmt.Sprintf("Web-%d", i)
		h.Check(t)
		hosts = append(hosts, h)
	}
	// Two hours later 1.1.0 is out; one host takes it, the others check in on 1.0.0.
	c.Add(2 * time.Hour)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	if u := hosts[0].Check(t); u == nil {
		t.Fatal("no offer of 1.1.0")
	}
	hosts[0].Install(t)
	hosts[0].Reboot("1.1.0")
	for _, h := range hosts {
		h.Check(t)
	}
	// A 3/0 from a host never offered anything: a failure without a target version.
	stray := s.Host(t, "stable", "1.0.0")
	stray.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeInstallDeviceOpenError)
	s.Flush(t)

	ctx, base := t.Context(), "/api/v1/apps/"+s.App
	hist, err := s.Admin.History(ctx, s.App, admin.HistoryQuery{Range: 3 * time.Hour, Buckets: 3, Group: "stable"})
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	var got []string
	for _, g := range hist.Groups {
		for _, p := range g.Points {
			got = append(got, fmt.Sprintf("%s %s %s %d", g.Group, p.At.Sub(hist.Since), p.Version, p.Hosts))
		}
	}
	want := []string{"stable 0s 1.0.0 3", "stable 2h0m0s 1.0.0 4", "stable 2h0m0s 1.1.0 1"}
	if len(hist.Groups) != 1 || hist.Buckets != 3 || !hist.CountedFrom.Equal(hist.Since) || time.Duration(hist.Bucket) != time.Hour || strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("history = %+v\npoints %q\nwant %q", hist, got, want)
	}
	for _, bad := range []string{"range=0s", "range=3000h", "range=x", "buckets=0", "buckets=100000", "group=nope"} {
		var v any
		if code := getJSON(t, s, base+"/history?"+bad, &v); code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Errorf("history?%s: %d, want 400 or 404", bad, code)
		}
	}

	found, err := s.Admin.Instances(ctx, s.App, admin.InstanceQuery{Search: "web-1"})
	if err != nil || len(found) != 1 || found[0].MachineID != hosts[1].MachineID {
		t.Errorf("search web-1: %+v, %v", found, err)
	}
	found, err = s.Admin.Instances(ctx, s.App, admin.InstanceQuery{Search: hosts[0].MachineID[8:20], Version: "1.1.0"})
	if err != nil || len(found) != 1 || found[0].Alias != "Web-0" {
		t.Errorf("search by machine id and version: %+v, %v", found, err)
	}
	var v any
	if code := getJSON(t, s, base+"/instances?q="+strings.Repeat("x", 129), &v); code != http.StatusBadRequest {
		t.Errorf("an over-long search: %d, want 400", code)
	}
	one, err := s.Admin.Instance(ctx, s.App, hosts[2].MachineID)
	if err != nil || one.Alias != "Web-2" || one.Group != "stable" {
		t.Errorf("instance: %+v, %v", one, err)
	}
	if _, err := s.Admin.Instance(ctx, s.App, omahatest.NewMachineID()); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown instance: %v, want not found", err)
	}

	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {basic(s.ReadOnlyToken)}})
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != http.StatusOK || !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("dashboard: %d, CSP %q", resp.StatusCode, csp)
	}
	page := string(body)
	if m := regexp.MustCompile(`<script(?: [^>]*)?>[^<]|<style|\sstyle=|\son[a-z]+=`).FindString(page); m != "" {
		t.Errorf("the page has inline script or style the CSP would block: %q", m)
	}
	// A failure from a host never offered anything is not counted against a version, and no
	// row reads ": 1 failed" with nothing before it.
	if m := regexp.MustCompile(`<td>: \d+ failed|</span>: \d+ failed`).FindString(page); m != "" {
		t.Errorf("the dashboard counts a failure without a target version: %q", m)
	}
	for _, want := range []string{`<script src="/dashboard.js"`, `data-action="pause"`} {
		if !strings.Contains(page, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	// The script and style sheet hold no data: served without a token.
	for path, ctype := range map[string]string{"/dashboard.js": "text/javascript", "/dashboard.css": "text/css"} {
		b, resp := get(t, s, s.URL+path, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(b) == 0 {
			t.Errorf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}
