package server_test

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
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// clock is a settable time source for policy tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)} }

// setup starts a server with the default app and returns it with the signing key.
func setup(t *testing.T, opts ...omahatest.Option) (*omahatest.Server, *payloadtest.Key) {
	t.Helper()
	s := omahatest.New(t, opts...)
	key := payloadtest.NewKey(t, "")
	s.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
	return s, key
}

// TestUpdateFlow walks one host through offer, download, install, reboot and completion, and
// checks the offer carries what update_engine needs and the download serves the same bytes.
func TestUpdateFlow(t *testing.T) {
	s, key := setup(t)
	testUpdateFlow(t, s, key)
}

// TestUpdateFlowPostgres is the same flow on PostgreSQL.
func TestUpdateFlowPostgres(t *testing.T) {
	s, key := setup(t, omahatest.WithDSN(omahatest.PostgresDSN(t)))
	testUpdateFlow(t, s, key)
}

func testUpdateFlow(t *testing.T, s *omahatest.Server, key *payloadtest.Key) {
	p1 := s.Publish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	path := s.BuildPayload(t, "1.1.0", key)
	p2 := s.Publish(t, "stable", path)
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Version != "1.0.0" || p2.Version != "1.1.0" || p2.Board != "amd64-usr" || p2.Size != int64(len(file)) {
		t.Fatalf("published %+v %+v", p1, p2)
	}

	h := s.Host(t, "stable", "1.0.0")
	h.Alias = "web-1"
	u := h.Check(t)
	if u == nil {
		t.Fatal("no update offered to a host on 1.0.0 with 1.1.0 on stable")
	}
	sum256, sum1 := sha256.Sum256(file), sha1.Sum(file)
	if u.Version != "1.1.0" || u.Size != int64(len(file)) || u.SHA256 != sum256 || u.SHA1 != sum1 || u.PackageName != "update-1.1.0.tsp" {
		t.Fatalf("offer = %+v", u)
	}
	urls := u.DownloadURLs()
	if len(urls) != 1 || urls[0] != s.URL+"/packages/"+hex.EncodeToString(sum256[:])+"/update-1.1.0.tsp" {
		t.Fatalf("download URLs = %v", urls)
	}
	if in := s.Instance(t, h.MachineID); in.State != "granted" || in.GrantedVersion != "1.1.0" || in.Alias != "web-1" || in.Group != "stable" {
		t.Fatalf("after offer: %+v", in)
	}

	// The download: whole file, a Range, and a conditional request on the ETag.
	body, resp := get(t, s, urls[0], nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, file) {
		t.Fatalf("download: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(file))
	}
	etag := resp.Header.Get("ETag")
	if etag != `"`+hex.EncodeToString(sum256[:])+`"` {
		t.Fatalf("ETag %q", etag)
	}
	body, resp = get(t, s, urls[0], http.Header{"Range": {"bytes=100-199"}})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, file[100:200]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
	_, resp = get(t, s, urls[0], http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}

	// The host asks again before doing anything: same offer, no second slot.
	if again := h.Check(t); again == nil || again.Version != "1.1.0" {
		t.Fatalf("second check = %v", again)
	}
	wantStates := []string{"downloading", "downloaded", "installed"}
	for i, ev := range [][2]int{{13, 1}, {14, 1}, {3, 1}} {
		h.Event(t, omaha.EventType(ev[0]), omaha.EventResult(ev[1]), 0)
		if in := s.Instance(t, h.MachineID); in.State != wantStates[i] {
			t.Fatalf("after %d/%d: state %q, want %q", ev[0], ev[1], in.State, wantStates[i])
		}
	}
	h.Ping(t) // waiting for reboot: ping only
	h.Reboot("1.1.0")
	if u := h.Check(t); u != nil {
		t.Fatalf("offer after the update: %v", u)
	}
	in := s.Instance(t, h.MachineID)
	if in.State != "complete" || in.Version != "1.1.0" || in.InstalledAt.IsZero() {
		t.Fatalf("after reboot: %+v", in)
	}
	evs := s.Events(t, h.MachineID)
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%d/%d", e.Type, e.Result))
	}
	if want := "3/2 3/2 13/1 14/1 3/1 3/2"; strings.Join(got, " ") != want {
		t.Fatalf("events %v, want %s", got, want)
	}
	if last := evs[len(evs)-1]; last.PreviousVersion != "1.0.0" || last.Version != "1.1.0" {
		t.Fatalf("last event %+v", last)
	}
	if evs[4].TargetVersion != "1.1.0" {
		t.Fatalf("3/1 event target %q", evs[4].TargetVersion)
	}
}

func get(t *testing.T, s *omahatest.Server, url string, h http.Header) ([]byte, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, resp
}

// TestTracks checks track resolution: group id, group name, channel name; unknown → noupdate.
func TestTracks(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "alpha", s.BuildPayload(t, "2.0.0", key))
	s.Publish(t, "beta", s.BuildPayload(t, "1.5.0", key))
	g := s.CreateGroup(t, "canary", "alpha", admin.Policy{Enabled: true})
	for _, tc := range []struct {
		track, want string
	}{
		{"alpha", "2.0.0"},
		{"beta", "1.5.0"},
		{"stable", ""},
		{"canary", "2.0.0"},
		{g.ID, "2.0.0"},
		{strings.ToUpper(g.ID), "2.0.0"},
	} {
		t.Run(tc.track, func(t *testing.T) {
			u := s.Host(t, tc.track, "1.0.0").Check(t)
			if got := versionOf(u); got != tc.want {
				t.Fatalf("track %s offered %q, want %q", tc.track, got, tc.want)
			}
		})
	}
}

func versionOf(u *omaha.Update) string {
	if u == nil {
		return ""
	}
	return u.Version
}

// TestNeverDowngrade checks hosts on the channel's version or newer get noupdate, and boards
// without a package too.
func TestNeverDowngrade(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.10.0", key))
	for _, tc := range []struct {
		version, board, want string
	}{
		{"1.9.9", "amd64-usr", "1.10.0"},
		{"1.10.0-rc.1", "amd64-usr", "1.10.0"},
		{"1.10.0", "amd64-usr", ""},
		{"1.10.0+local", "amd64-usr", ""},
		{"1.11.0", "amd64-usr", ""},
		{"2.0", "amd64-usr", ""},
		{"1.0.0", "arm64-usr", ""},
	} {
		h := s.Host(t, "stable", tc.version)
		h.Board = tc.board
		if got := versionOf(h.Check(t)); got != tc.want {
			t.Errorf("host %s/%s offered %q, want %q", tc.version, tc.board, got, tc.want)
		}
	}
}

// TestPolicy checks paused groups, max updates per period, update timeout and the period.
func TestPolicy(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, MaxUpdates: 2,
		Period: admin.Duration(time.Hour), UpdateTimeout: admin.Duration(10 * time.Minute)})
	hosts := make([]*omahatest.Host, 4)
	for i := range hosts {
		hosts[i] = s.Host(t, "fleet", "1.0.0")
	}
	if hosts[0].Check(t) == nil || hosts[1].Check(t) == nil {
		t.Fatal("the first two hosts got no update")
	}
	if hosts[2].Check(t) != nil {
		t.Fatal("a third host got an update beyond max 2 per hour")
	}
	if in := s.Instance(t, hosts[2].MachineID); in.State != "onhold" {
		t.Fatalf("held host state %q", in.State)
	}
	// A holder asking again gets its update again.
	if hosts[1].Check(t) == nil {
		t.Fatal("a granted host was refused its update")
	}
	// Host 0 installs; host 1 stays silent past the update timeout and frees its slot. The
	// "cap reached" memo lasts one second.
	hosts[0].Install(t)
	c.Add(11 * time.Minute)
	if hosts[2].Check(t) == nil {
		t.Fatal("no update after a slot timed out")
	}
	if hosts[3].Check(t) != nil {
		t.Fatal("update beyond the cap after the timeout")
	}
	// Host 1 timed out: it needs a new slot, and there is none.
	if hosts[1].Check(t) != nil {
		t.Fatal("a timed-out grant was honoured without a slot")
	}
	// Next period: room again.
	c.Add(time.Hour)
	if hosts[3].Check(t) == nil {
		t.Fatal("no update in the next period")
	}
	// Pausing stops every offer, re-offers included.
	s.UpdateGroup(t, "fleet", admin.GroupChange{Enabled: ptr(false)})
	for _, h := range []*omahatest.Host{hosts[1], hosts[3], s.Host(t, "fleet", "1.0.0")} {
		if h.Check(t) != nil {
			t.Fatal("update offered in a paused group")
		}
	}
	s.UpdateGroup(t, "fleet", admin.GroupChange{Enabled: ptr(true), MaxUpdates: ptr(int64(0))})
	if s.Host(t, "fleet", "1.0.0").Check(t) == nil {
		t.Fatal("no update after resuming without a cap")
	}
}

func ptr[T any](v T) *T { return &v }

// TestRollback checks 3/0/44 marks a rollback, the version is not offered again, the failure
// is counted per group and target version, and a newer version is offered.
func TestRollback(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	h := s.Host(t, "stable", "1.0.0")
	failing := s.Host(t, "stable", "1.0.0")
	for _, x := range []*omahatest.Host{h, failing} {
		if x.Check(t) == nil {
			t.Fatal("no offer")
		}
		x.Install(t)
	}
	failing.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodePostinstallRunnerError|omaha.ErrorCodeFlagTestOmahaURL)
	// h rebooted into 1.1.0, failed its health check and came back on 1.0.0.
	if u := h.CheckAfterRollback(t); u != nil {
		t.Fatalf("offered %s again after rolling back from it", u.Version)
	}
	in := s.Instance(t, h.MachineID)
	if in.State != "rolledback" || in.RollbackVersion != "1.1.0" || in.LastError != int64(omaha.ErrorCodeRollback|omaha.ErrorCodeFlagTestOmahaURL) {
		t.Fatalf("after rollback: %+v", in)
	}
	if u := h.Check(t); u != nil {
		t.Fatalf("offered %s on the next check", u.Version)
	}
	if in := s.Instance(t, failing.MachineID); in.State != "error" {
		t.Fatalf("failed host state %q", in.State)
	}
	st := s.Status(t)
	var fails []admin.Failures
	for _, g := range st.Groups {
		if g.Group.Name == "stable" {
			fails = g.Failures
		}
	}
	if len(fails) != 1 || fails[0] != (admin.Failures{TargetVersion: "1.1.0", Failed: 1, RolledBack: 1}) {
		t.Fatalf("failures = %+v", fails)
	}
	// The dashboard shows the channel, the counts and the recent failures.
	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {"Bearer " + s.ReadOnlyToken}})
	for _, want := range []string{"<td>stable</td><td>amd64-usr</td><td>1.1.0</td>", "1.0.0 rolledback: 1", "1.1.0: 1 failed, 1 rolled back",
		"update complete: error (RollbackError|TestOmahaUrl)", h.MachineID} {
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("dashboard (%d) lacks %q", resp.StatusCode, want)
		}
	}
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.1", key))
	if u := h.Check(t); versionOf(u) != "1.1.1" {
		t.Fatalf("newer version not offered after a rollback: %v", u)
	}
}

// snapshot is everything a refused request must leave unchanged.
type snapshot struct {
	instances, events, packages int
	catalog                     int64
	files                       []string
}

func snap(t *testing.T, s *omahatest.Server) snapshot {
	t.Helper()
	s.Flush(t)
	ctx := t.Context()
	ins, err := s.DB.Instances(ctx, store.InstanceFilter{Limit: store.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.DB.Events(ctx, store.EventFilter{Limit: store.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := s.DB.Packages(ctx, s.App)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.DB.CatalogVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	filepath.WalkDir(s.StoreDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return snapshot{len(ins), len(evs), len(ps), v, files}
}

func (a snapshot) String() string {
	type plain snapshot
	return fmt.Sprintf("%+v", plain(a))
}

const goodCheck = `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
<os version="Chateau" platform="CoreOS" sp="1.0.0_x86_64"></os>
<app appid="{APPID}" version="1.0.0" track="TRACK" bootid="{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}" oem="" oemversion="" alephversion="1.0.0" machineid="MACHINE" machinealias="" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false">
<ping active="1"></ping><updatecheck></updatecheck><event eventtype="3" eventresult="2" previousversion=""></event>
</app></request>`

// TestBadInput sends every kind of bad Omaha request and checks the defined answer and that
// nothing was stored.
func TestBadInput(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	machine := omahatest.NewMachineID()
	doc := func(repl ...string) string {
		// The first pair for a key wins: overrides go first.
		r := strings.NewReplacer(append(repl, "APPID", payload.DefaultAppID, "TRACK", "stable", "MACHINE", machine)...)
		return r.Replace(goodCheck)
	}
	for _, tc := range []struct {
		name      string
		body      string
		code      int
		appStatus omaha.Status
	}{
		{"empty", "", 400, ""},
		{"not XML", "hello", 400, ""},
		{"truncated", doc()[:300], 400, ""},
		{"wrong root", `<response protocol="3.0"></response>`, 400, ""},
		{"protocol 2.0", strings.Replace(doc(), `protocol="3.0"`, `protocol="2.0"`, 1), 400, ""},
		{"huge", strings.Replace(doc(), `lang="en-US"`, `lang="`+strings.Repeat("x", omaha.MaxRequestBytes)+`"`, 1), 413, ""},
		{"trailing garbage", doc() + "<x/>", 400, ""},
		{"entity bomb", `<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><request protocol="3.0">&b;</request>`, 400, ""},
		{"machine id with braces", doc("MACHINE", "{"+machine+"}"), 400, ""},
		{"machine id upper case", doc("MACHINE", strings.ToUpper(machine)), 400, ""},
		{"machine id short", doc("MACHINE", machine[:31]), 400, ""},
		{"no machine id", doc("MACHINE", ""), 400, ""},
		{"bad boot id", strings.Replace(doc(), "{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}", "{not-a-uuid}", 1), 400, ""},
		{"bad version", strings.Replace(doc(), `version="1.0.0" track`, `version="1.0.0;rm" track`, 1), 400, ""},
		{"control char in track", doc("TRACK", "sta&#x1;ble"), 400, ""},
		{"too many apps", strings.Replace(doc(), "<app ", strings.Repeat(`<app appid="{x}"></app>`, omaha.MaxApps+1)+"<app ", 1), 413, ""},
		{"unknown app", doc("APPID", "00000000-0000-4000-8000-000000000000"), 200, omaha.StatusUnknownApplication},
		{"invalid app id", doc("APPID", "twinslot"), 200, omaha.StatusInvalidAppID},
		{"unknown track", doc("TRACK", "nightly"), 200, omaha.StatusUnknownApplicationOrGroup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, s)
			code, out := s.Post(t, []byte(tc.body))
			if code != tc.code {
				t.Fatalf("status %d, want %d: %s", code, tc.code, out)
			}
			if tc.appStatus != "" {
				resp, err := omaha.ParseResponse(bytes.NewReader(out))
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Apps) != 1 || resp.Apps[0].Status != tc.appStatus {
					t.Fatalf("response %s", out)
				}
				if uc := resp.Apps[0].UpdateCheck; tc.appStatus == omaha.StatusUnknownApplicationOrGroup && (uc == nil || uc.Status != omaha.StatusInternalError) {
					t.Fatalf("unknown track: want updatecheck error-internal, got %s", out)
				}
			}
			if after := snap(t, s); after.String() != before.String() {
				t.Fatalf("state changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	// Unknown event pairs are accepted and recorded.
	h := s.Host(t, "stable", "1.0.0")
	h.Event(t, 999, 77, 5)
	if evs := s.Events(t, h.MachineID); len(evs) != 1 || evs[0].Type != 999 || evs[0].Result != 77 {
		t.Fatalf("unknown event pair: %+v", evs)
	}
	if in := s.Instance(t, h.MachineID); in.State != "idle" {
		t.Fatalf("unknown event changed the state to %q", in.State)
	}
	// The valid request works (the test above is not vacuous).
	code, out := s.Post(t, []byte(doc()))
	if code != 200 || !bytes.Contains(out, []byte(`status="ok"`)) || !bytes.Contains(out, []byte("1.1.0")) {
		t.Fatalf("good request: %d %s", code, out)
	}
}

// TestAdminAuth checks tokens: none, unknown, read-only on reads and writes, admin.
func TestAdminAuth(t *testing.T) {
	s, _ := setup(t)
	ro, err := admin.NewClient(s.URL, s.ReadOnlyToken, s.HTTP.Client())
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := admin.NewClient(s.URL, "", s.HTTP.Client())
	bogus, _ := admin.NewClient(s.URL, "tst_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", s.HTTP.Client())
	garbage, _ := admin.NewClient(s.URL, strings.Repeat("x", 5000), s.HTTP.Client())
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"no token read", func() error { _, err := anon.Apps(ctx); return err }(), admin.ErrUnauthorized},
		{"unknown token read", func() error { _, err := bogus.Apps(ctx); return err }(), admin.ErrUnauthorized},
		{"garbage token read", func() error { _, err := garbage.Apps(ctx); return err }(), admin.ErrUnauthorized},
		{"read-only write", func() error {
			_, err := ro.CreateGroup(ctx, s.App, admin.Group{Name: "x", Channel: "beta", Policy: admin.Policy{Enabled: true}})
			return err
		}(), admin.ErrForbidden},
		{"read-only promote", func() error {
			_, err := ro.Promote(ctx, s.App, admin.Promote{Version: "1", From: "alpha", To: "beta"})
			return err
		}(), admin.ErrForbidden},
		{"read-only read", func() error { _, err := ro.Apps(ctx); return err }(), nil},
		{"admin read", func() error { _, err := s.Admin.Groups(ctx, s.App); return err }(), nil},
	} {
		if !errors.Is(tc.err, tc.want) && !(tc.want == nil && tc.err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if gs, _ := s.Admin.Groups(ctx, s.App); len(gs) != 3 {
		t.Fatalf("a refused write changed the groups: %+v", gs)
	}
	// The dashboard takes the token as the HTTP Basic password.
	_, resp := get(t, s, s.URL+"/", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("dashboard without token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+s.ReadOnlyToken))}})
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("app "+s.App)) {
		t.Fatalf("dashboard: %d %.200s", resp.StatusCode, body)
	}
}

// TestPublishRefused uploads payloads that must not be accepted and checks nothing was kept.
func TestPublishRefused(t *testing.T) {
	s, key := setup(t, omahatest.WithConfig(func(c *server.Config) { c.MaxUploadBytes = 1 << 20 }))
	other := payloadtest.NewKey(t, "")
	dir := t.TempDir()
	good := s.BuildPayload(t, "1.0.0", key)
	unsigned := filepath.Join(dir, "unsigned.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(64<<10, 1), unsigned, payloadtest.Options("1.0.1"))
	wrongKey := filepath.Join(dir, "wrongkey.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(64<<10, 2), wrongKey, payloadtest.Options("1.0.2"), other)
	wrongApp := filepath.Join(dir, "wrongapp.tsp")
	o := payloadtest.Options("1.0.3")
	o.AppID = "00000000-0000-4000-8000-000000000000"
	payloadtest.BuildBytes(t, payloadtest.Image(64<<10, 3), wrongApp, o, key)
	tampered := filepath.Join(dir, "tampered.tsp")
	b, _ := os.ReadFile(good)
	b[200] ^= 1 // inside the envelope
	os.WriteFile(tampered, b, 0o644)
	truncated := filepath.Join(dir, "truncated.tsp")
	os.WriteFile(truncated, b[:len(b)/2], 0o644)
	garbage := filepath.Join(dir, "garbage.tsp")
	os.WriteFile(garbage, []byte("not a payload at all"), 0o644)
	empty := filepath.Join(dir, "empty.tsp")
	os.WriteFile(empty, nil, 0o644)
	huge := filepath.Join(dir, "huge.tsp")
	os.WriteFile(huge, make([]byte, 2<<20), 0o644)
	for _, tc := range []struct {
		name, path string
		want       error
	}{
		{"unsigned", unsigned, admin.ErrRefused},
		{"unknown key", wrongKey, admin.ErrRefused},
		{"other app", wrongApp, admin.ErrRefused},
		{"tampered", tampered, admin.ErrRefused},
		{"truncated", truncated, admin.ErrRefused},
		{"garbage", garbage, admin.ErrRefused},
		{"empty", empty, admin.ErrBadRequest},
		{"too large", huge, &admin.Error{StatusCode: http.StatusRequestEntityTooLarge}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snap(t, s)
			_, err := s.TryPublish(t, "alpha", tc.path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if after := snap(t, s); after.String() != before.String() {
				t.Fatalf("state changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	// Bad publish parameters.
	f, err := os.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, o := range []admin.PublishOptions{{Channel: "edge"}, {Name: "../x"}, {URL: "ftp://x/y"}, {URL: "https://cdn.example/dir/"}} {
		f.Seek(0, io.SeekStart)
		st, _ := f.Stat()
		if _, err := s.Admin.Publish(t.Context(), s.App, f, st.Size(), o); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("publish %+v: %v", o, err)
		}
	}
	// After all that, the good one still goes through, and again (idempotent).
	s.Publish(t, "alpha", good)
	s.Publish(t, "alpha", good)
	if n := snap(t, s).packages; n != 1 {
		t.Fatalf("%d packages after publishing one twice", n)
	}
}

// TestAdminAPI exercises apps, channels, promote, withdraw, external URLs and groups.
func TestAdminAPI(t *testing.T) {
	s, key := setup(t)
	ctx := t.Context()
	a := s.Admin
	if _, err := a.CreateApp(ctx, admin.App{ID: payload.DefaultAppID, Name: "x", Trust: []byte(`{}`)}); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("app with a bad trust root: %v", err)
	}
	if _, err := a.CreateApp(ctx, admin.App{ID: "{" + strings.ToUpper(payload.DefaultAppID) + "}", Name: "again", Trust: trustJSON(t, key)}); !errors.Is(err, admin.ErrConflict) {
		t.Fatalf("duplicate app: %v", err)
	}
	if _, err := a.App(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("unknown app: %v", err)
	}
	s.Publish(t, "alpha", s.BuildPayload(t, "1.0.0", key))
	s.Publish(t, "alpha", s.BuildPayload(t, "1.1.0", key))
	if _, err := a.Promote(ctx, s.App, admin.Promote{Version: "1.0.0", From: "alpha", To: "beta"}); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("promote of a version alpha no longer carries: %v", err)
	}
	s.Promote(t, "1.1.0", "alpha", "beta")
	chs, err := a.Channels(ctx, s.App)
	if err != nil || chs[1].Name != "beta" || chs[1].Packages["amd64-usr"].Version != "1.1.0" {
		t.Fatalf("channels after promote: %+v %v", chs, err)
	}
	// An external base URL comes first, this server second.
	if _, err := a.SetChannel(ctx, s.App, "beta", admin.ChannelChange{ExternalURL: "https://cdn.example/{board}/{version}/"}); err != nil {
		t.Fatal(err)
	}
	u := s.Host(t, "beta", "1.0.0").Check(t)
	if u == nil || len(u.URLs) != 2 || u.URLs[0] != "https://cdn.example/amd64-usr/1.1.0/" || !strings.HasPrefix(u.URLs[1], s.URL+"/packages/") {
		t.Fatalf("offer with external URL: %+v", u)
	}
	// Withdraw 1.1.0: alpha falls back to 1.0.0, beta has nothing.
	if _, err := a.Withdraw(ctx, s.App, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if v := versionOf(s.Host(t, "alpha", "0.9.0").Check(t)); v != "1.0.0" {
		t.Fatalf("alpha after withdraw offers %q", v)
	}
	if v := versionOf(s.Host(t, "beta", "0.9.0").Check(t)); v != "" {
		t.Fatalf("beta after withdraw offers %q", v)
	}
	// Groups by name and id; bad changes are refused.
	g := s.CreateGroup(t, "canary", "alpha", admin.Policy{Enabled: true, MaxUpdates: 5, Period: admin.Duration(time.Hour)})
	if got, err := a.Group(ctx, s.App, "canary"); err != nil || got.ID != g.ID {
		t.Fatalf("group by name: %+v %v", got, err)
	}
	if got := s.UpdateGroup(t, g.ID, admin.GroupChange{Channel: ptr("beta"), Period: ptr(admin.Duration(2 * time.Hour))}); got.Channel != "beta" || time.Duration(got.Policy.Period) != 2*time.Hour || got.Policy.MaxUpdates != 5 {
		t.Fatalf("updated group %+v", got)
	}
	for _, c := range []admin.GroupChange{{Channel: ptr("edge")}, {MaxUpdates: ptr(int64(-1))}} {
		if _, err := a.UpdateGroup(ctx, s.App, "canary", c); !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("update %+v: %v", c, err)
		}
	}
	if _, err := a.UpdateGroup(ctx, s.App, "stable", admin.GroupChange{Channel: ptr("alpha")}); !errors.Is(err, admin.ErrBadRequest) {
		t.Errorf("moving a default group: %v", err)
	}
	if _, err := a.Group(ctx, s.App, "nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Errorf("unknown group: %v", err)
	}
	// Listing filters.
	ins, err := a.Instances(ctx, s.App, admin.InstanceQuery{Group: "alpha"})
	if err != nil || len(ins) != 1 || ins[0].Version != "0.9.0" {
		t.Fatalf("instances of alpha: %+v %v", ins, err)
	}
	if _, err := a.Instances(ctx, s.App, admin.InstanceQuery{Limit: store.MaxLimit + 1}); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("limit too large: %v", err)
	}
}

// TestGroupDurationBelowMillisecond: a group's timeouts are stored in whole milliseconds, so a
// positive one below 1ms would be stored as 0, which turns the timeout off; the admin API
// refuses it and leaves the group as it was.
func TestGroupDurationBelowMillisecond(t *testing.T) {
	s, _ := setup(t)
	ctx := t.Context()
	g := s.CreateGroup(t, "canary", "alpha", admin.Policy{Enabled: true, MaxUpdates: 5, Period: admin.Duration(time.Hour),
		UpdateTimeout: admin.Duration(time.Hour), GrantStartTimeout: admin.Duration(time.Minute)})
	for _, c := range []admin.GroupChange{
		{UpdateTimeout: ptr(admin.Duration(500 * time.Microsecond))},
		{GrantStartTimeout: ptr(admin.Duration(999 * time.Microsecond))},
	} {
		got, err := s.Admin.UpdateGroup(ctx, s.App, g.ID, c)
		if !errors.Is(err, admin.ErrBadRequest) {
			t.Errorf("update %+v: %v (group now %+v), want a bad request", c, err, got.Policy)
		}
	}
	if got, err := s.Admin.Group(ctx, s.App, g.ID); err != nil || time.Duration(got.Policy.UpdateTimeout) != time.Hour ||
		time.Duration(got.Policy.GrantStartTimeout) != time.Minute {
		t.Errorf("group after refused changes: %+v %v", got.Policy, err)
	}
	if _, err := s.Admin.CreateGroup(ctx, s.App, admin.Group{Name: "tiny", Channel: "alpha",
		Policy: admin.Policy{Enabled: true, UpdateTimeout: admin.Duration(time.Microsecond)}}); !errors.Is(err, admin.ErrBadRequest) {
		t.Errorf("create with a 1µs update timeout: %v, want a bad request", err)
	}
}

func trustJSON(t *testing.T, keys ...*payloadtest.Key) []byte {
	b, err := payloadtest.TrustRoot(t, 1, 0, keys...).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func httptestServer(t *testing.T, srv *server.Server) *httptest.Server {
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs
}

// TestMetricsAndHealth checks /metrics and /healthz answer and count.
func TestMetricsAndHealth(t *testing.T) {
	s, _ := setup(t)
	s.Host(t, "stable", "1.0.0").Check(t)
	body, resp := get(t, s, s.URL+"/healthz", nil)
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
	body, _ = get(t, s, s.URL+"/metrics", nil)
	for _, want := range []string{
		`omahad_update_checks_total{reason="no-package",status="noupdate"} 1`,
		`omahad_events_total{result="2",type="3"} 1`,
		`omahad_http_requests_total{code="200",route="POST /v1/update/{$}"} 1`,
		"omahad_checkin_batch_rows_bucket",
		"omahad_db_seconds_bucket",
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestShutdownFlushes checks queued check-ins are written by Close.
func TestShutdownFlushes(t *testing.T) {
	dir := t.TempDir()
	dsn := filepath.Join(dir, "omahad.db")
	db, err := store.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tr := trustJSON(t, payloadtest.NewKey(t, ""))
	if err := db.CreateApp(t.Context(), store.App{ID: payload.DefaultAppID, Name: "x", Trust: tr}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A long flush interval: nothing is written before Close.
	srv, err := server.New(t.Context(), server.Config{DB: db, StoreDir: filepath.Join(dir, "p"), FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptestServer(t, srv)
	const n = 50
	for i := range n {
		body := strings.NewReplacer("APPID", payload.DefaultAppID, "TRACK", "stable", "MACHINE", fmt.Sprintf("%032x", i)).Replace(goodCheck)
		resp, err := hs.Client().Post(hs.URL+"/v1/update/", "text/xml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	hs.Close()
	if err := srv.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	ins, err := db.Instances(t.Context(), store.InstanceFilter{})
	if err != nil || len(ins) != n {
		t.Fatalf("%d instances after shutdown, want %d (%v)", len(ins), n, err)
	}
}
