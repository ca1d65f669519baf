package dashboardtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/server/dashboardtest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// Budgets: generous, for a loaded 2-core machine. The whole browser session ends by budget.
const (
	budget = 3 * time.Minute
	step   = 60 * time.Second
)

// fleet starts omahad with a small fleet and six days of history, on a clock that runs from
// six days ago to now in 3-hour rounds in which every host checks in: 1.0.0 on stable; 1.1.0
// published to beta and promoted to stable on day 2; stable hosts take it one after another
// (three never do); canary-1 fails it on day 4, which halts the canary group. At the end 1.2.0
// reaches beta, stable gets a gate of one day's soak, and its rollouts go in waves.
func fleet(t *testing.T) (*omahatest.Server, map[string]*omahatest.Host) {
	const rounds, round = 48, 3 * time.Hour
	var behind atomic.Int64 // how far the server's clock is behind the real one
	behind.Store(int64(rounds * round))
	s := omahatest.New(t, omahatest.WithConfig(func(c *server.Config) {
		c.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
	}))
	key := payloadtest.NewKey(t, "")
	s.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
	s.Publish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	s.CreateGroup(t, "canary", "stable", admin.Policy{Enabled: true, MaxUpdates: 10, Period: admin.Duration(time.Hour), HaltOnFailures: 1})
	// The round from which each host installs an offer (0 = never); canary-1 fails instead.
	takes := map[string]int{"web-1": 18, "web-2": 20, "web-3": 24, "web-4": 27, "db-1": 33, "web-5": 0, "db-2": 0, "db-3": 0,
		"canary-1": 30, "canary-2": 0, "canary-3": 0}
	hosts := map[string]*omahatest.Host{}
	names := slices.Sorted(maps.Keys(takes))
	for _, name := range names {
		track := "stable"
		if strings.HasPrefix(name, "canary") {
			track = "canary"
		}
		h := s.Host(t, track, "1.0.0")
		h.Alias = name
		hosts[name] = h
	}
	for r := range rounds {
		if r == 16 {
			s.Publish(t, "beta", s.BuildPayload(t, "1.1.0", key))
			s.Promote(t, "1.1.0", "beta", "stable")
		}
		for _, name := range names {
			h := hosts[name]
			u := h.Check(t)
			switch {
			case u == nil || takes[name] == 0 || r < takes[name]:
			case name == "canary-1":
				h.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeInstallDeviceOpenError)
			default:
				h.Install(t)
				h.Reboot("1.1.0") // the only version ever offered
			}
		}
		behind.Add(-int64(round))
	}
	// stable rolls out in waves from now on.
	waves := "20%:1h,50%:2h,100%"
	s.UpdateGroup(t, "stable", admin.GroupChange{Waves: &waves})
	// 1.2.0 just reached beta; stable's gate wants it to soak there for a day.
	s.Publish(t, "beta", s.BuildPayload(t, "1.2.0", key))
	if _, err := s.Admin.SetGate(t.Context(), s.App, admin.Gate{Channel: "stable", MinSoak: admin.Duration(24 * time.Hour), MaxFailures: -1, MaxRollbacks: -1}); err != nil {
		t.Fatal(err)
	}
	s.Flush(t)
	if g, err := s.Admin.Group(t.Context(), s.App, "canary"); err != nil || g.Policy.Enabled {
		t.Fatalf("canary after a failure: %+v, %v; want halted", g.Policy, err)
	}
	return s, hosts
}

// artifacts returns the directory for the screenshots: $TWINSLOT_ARTIFACTS/dashboard, or a
// temporary one.
func artifacts(t *testing.T) string {
	dir := t.TempDir()
	if a := os.Getenv("TWINSLOT_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// TestDashboardInChromium runs a rollout from the dashboard in a real browser: open the page;
// a read-only token's pause is refused and says so; sign in with an admin token, click Pause,
// confirm, and the admin API then shows the group paused and the audit log the change under
// that token; promote past a failing gate with a reason; search a host by alias and open its
// history. The page must reach nothing but omahad, throw no script error and break nothing of
// its Content-Security-Policy (which refuses an injected inline script).
func TestDashboardInChromium(t *testing.T) {
	dashboardtest.Chromium(t) // skips early, before building the fleet
	s, hosts := fleet(t)
	dir := artifacts(t)
	b := dashboardtest.NewBrowser(t, s.URL, "operator", s.ReadOnlyToken, budget)

	var (
		mu         sync.Mutex
		exceptions []string
	)
	thrown := chromedp.Events(b.Ctx, runtime.ExceptionThrown) // subscribed from here on
	go func() {
		for ev, err := range thrown {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			mu.Lock()
			exceptions = append(exceptions, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber, msg))
			mu.Unlock()
		}
	}()

	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.Ctx, step)
		defer cancel()
		start := time.Now()
		if err := chromedp.Do(ctx, actions...); err != nil {
			shot(t, b, dir, "failed.png")
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
	}
	strs := func(expr string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.Ctx, step)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	// Record every Content-Security-Policy violation of every page load, across reloads.
	if _, err := chromedp.Call(b.Ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
document.addEventListener("securitypolicyviolation", e => {
  const v = JSON.parse(sessionStorage.getItem("test.csp") || "[]");
  v.push(e.violatedDirective + " " + e.blockedURI);
  sessionStorage.setItem("test.csp", JSON.stringify(v));
});`}); err != nil {
		t.Fatal(err)
	}
	violations := func() []string {
		return strs(`JSON.parse(sessionStorage.getItem("test.csp") || "[]")`)
	}

	stable := `tr.group[data-name="stable"]`
	do("open the dashboard",
		chromedp.Navigate(s.URL+"/"),
		chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)),
		chromedp.WaitVisible(chromedp.CSS(stable+` td.chart svg`)))
	do("wait for the waves", chromedp.WaitVisible(chromedp.CSS(stable+` td.waves svg`)))
	if got := strs(`[document.querySelector("tr.group[data-name=stable] td.waves").textContent]`); !strings.Contains(got[0], "wave 1 of 3 (20% of hosts) for 1.1.0") ||
		!strings.Contains(got[0], "plan 20%:1h,50%:2h,100%") {
		t.Errorf("stable's waves cell = %q, want wave 1 of 3 of its plan", got[0])
	}
	// The page's policy holds: an inline script is refused (and seen by the recorder).
	do("inject an inline script", chromedp.Evaluate[chromedp.Void](`{ const s = document.createElement("script"); s.textContent = "document.title = 'pwned'"; document.body.append(s); }`))
	if v := violations(); len(v) == 0 || !strings.HasPrefix(v[0], "script-src") {
		t.Errorf("an inline script was not refused by the CSP: violations %q", v)
	}
	do("clear the violations", chromedp.Evaluate[chromedp.Void](`sessionStorage.removeItem("test.csp")`))
	// And a script error is seen.
	do("throw from a timer", chromedp.Evaluate[chromedp.Void](`setTimeout(() => { throw new Error("test error") }, 0)`))
	for deadline := time.Now().Add(step); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		n := len(exceptions)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a script error thrown in the page was not seen")
		}
	}
	mu.Lock()
	exceptions = nil
	mu.Unlock()
	if got := strs(`[...document.querySelectorAll("tr.group[data-name=canary] td.policy")].map(e => e.textContent)`); len(got) != 1 || !strings.Contains(got[0], "HALTED") {
		t.Errorf("canary's policy cell = %q, want HALTED with its reason", got)
	}
	shot(t, b, dir, "dashboard.png")

	// A read-only token can sign in and read, but its changes are refused and the page says so.
	do("sign in read-only",
		chromedp.SendKeys(chromedp.CSS("#token"), s.ReadOnlyToken),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#signout")),
		chromedp.WaitEnabled(chromedp.CSS(stable+` button[data-action="pause"]`)),
		chromedp.Click(chromedp.CSS(stable+` button[data-action="pause"]`)),
		chromedp.WaitVisible(chromedp.CSS("#confirm[open]")),
		chromedp.Click(chromedp.CSS("#confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS("#flash.error")))
	if got := strs(`[document.getElementById("flash").textContent]`); !strings.Contains(got[0], "read-only") {
		t.Errorf("after a read-only pause the page says %q, want the refusal", got[0])
	}
	if g, err := s.Admin.Group(t.Context(), s.App, "stable"); err != nil || !g.Policy.Enabled {
		t.Fatalf("stable after a read-only pause: %+v, %v; want enabled", g.Policy, err)
	}
	do("sign out", chromedp.Click(chromedp.CSS("#signout")), chromedp.WaitVisible(chromedp.CSS("#token")))

	do("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), s.AdminToken),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#signout")),
		chromedp.WaitEnabled(chromedp.CSS(stable+` button[data-action="pause"]`)))
	// The README's picture: the top of the window as a signed-in operator sees it.
	do("scroll to the top", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	write(t, b, dir, "readme.png", chromedp.CaptureScreenshot())
	do("click pause", chromedp.Click(chromedp.CSS(stable+` button[data-action="pause"]`)), chromedp.WaitVisible(chromedp.CSS("#confirm[open]")))
	shot(t, b, dir, "confirm.png")
	do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")),
		// The page reloads after the change: stable then offers Resume.
		chromedp.WaitVisible(chromedp.CSS(stable+` button[data-action="resume"]`)))
	shot(t, b, dir, "paused.png")

	ctx := t.Context()
	g, err := s.Admin.Group(ctx, s.App, "stable")
	if err != nil || g.Policy.Enabled {
		t.Fatalf("stable after the click: %+v, %v; want paused", g.Policy, err)
	}
	audit, err := s.Admin.Audit(ctx, admin.AuditQuery{})
	if err != nil || len(audit.Entries) == 0 {
		t.Fatalf("audit: %+v, %v", audit, err)
	}
	e := audit.Entries[0]
	var detail bytes.Buffer
	json.Compact(&detail, e.Detail)
	if e.Action != "group.update" || e.Who != "omahatest admin" || !strings.HasSuffix(e.Target, "/groups/stable") ||
		!strings.Contains(detail.String(), `{"request":{"enabled":false}}`) || !strings.HasPrefix(e.Remote, "127.0.0.1") {
		t.Errorf("newest audit entry = %s %s %s %s from %s; want the dashboard's pause of stable by the admin token from 127.0.0.1", e.Who, e.Action, e.Target, detail.String(), e.Remote)
	}

	// Promote 1.2.0 from beta: the gate refuses (it has not soaked), the dialog lists its checks
	// and asks for a reason to override, and the override is recorded with it.
	promote := `tr.group[data-name="beta"] button[data-action="promote"]`
	do("click promote", chromedp.Click(chromedp.CSS(promote)), chromedp.WaitVisible(chromedp.CSS("#confirm[open]")),
		chromedp.Click(chromedp.CSS("#confirm-ok")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-gates li")), chromedp.WaitVisible(chromedp.CSS("#confirm-reason")))
	if got := strs(`[...document.querySelectorAll("#confirm-gates li")].map(li => li.textContent)`); !slices.ContainsFunc(got, func(s string) bool {
		return strings.HasPrefix(s, "FAILS") && strings.Contains(s, "soak")
	}) {
		t.Errorf("the gate's checks in the dialog: %q, want the failed soak", got)
	}
	shot(t, b, dir, "gate.png")
	const reason = "fix for a remote crash, signed off by security"
	do("override the gate",
		chromedp.SendKeys(chromedp.CSS("#confirm-reason"), reason),
		chromedp.Click(chromedp.CSS("#confirm-ok")),
		chromedp.WaitNotPresent(chromedp.CSS(promote)), // the page reloads: stable offers 1.2.0 too
		chromedp.WaitReady(chromedp.CSS(`body[data-ready="true"]`)))
	st := s.Status(t)
	for _, c := range st.Channels {
		if c.Name == "stable" && c.Packages["amd64-usr"].Version != "1.2.0" {
			t.Errorf("stable after the override offers %q, want 1.2.0", c.Packages["amd64-usr"].Version)
		}
	}
	if audit, err = s.Admin.Audit(ctx, admin.AuditQuery{Limit: 1}); err != nil || len(audit.Entries) != 1 ||
		audit.Entries[0].Action != "promote" || !strings.Contains(string(audit.Entries[0].Detail), reason) {
		t.Errorf("newest audit entry after the override: %+v, %v; want the forced promotion with its reason", audit.Entries, err)
	}

	want := hosts["web-2"].MachineID
	do("search web-2",
		chromedp.SendKeys(chromedp.CSS(`form.search input[name="q"]`), "WEB-2"),
		chromedp.Click(chromedp.CSS(`form.search button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.instances tbody a.open`)))
	if got := strs(`[...document.querySelectorAll("table.instances tbody a.open")].map(a => a.textContent)`); !slices.Equal(got, []string{want}) {
		t.Errorf("search for WEB-2 lists %q, want [%s]", got, want)
	}
	do("open its history", chromedp.Click(chromedp.CSS(`table.instances tbody a.open`)), chromedp.WaitVisible(chromedp.CSS(`div.instance table.events`)))
	shot(t, b, dir, "instance.png")
	// Newest first, a run of the same event (routine check-ins) folded into one row.
	type run struct {
		key, text string
		n         int
	}
	var rs []run
	evs := s.Events(t, want)
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		text := e.Description
		if e.PreviousVersion != "" {
			text += " (from " + e.PreviousVersion + ")"
		}
		key := text + "|" + e.Version + "|" + e.TargetVersion
		if len(rs) > 0 && rs[len(rs)-1].key == key {
			rs[len(rs)-1].n++
			continue
		}
		rs = append(rs, run{key, text, 1})
	}
	var wantRows []string
	for _, r := range rs {
		if r.n > 1 {
			r.text += fmt.Sprintf(" × %d", r.n)
		}
		wantRows = append(wantRows, r.text)
	}
	got := strs(`[...document.querySelectorAll("div.instance table.events tr td:nth-child(2)")].map(td => td.textContent)`)
	if len(wantRows) < 5 || !slices.Equal(got, wantRows) { // check-ins, 13/1, 14/1, 3/1, the 3/2 after, check-ins
		t.Errorf("history of web-2 = %q, want %q", got, wantRows)
	}

	if v := violations(); len(v) > 0 {
		t.Errorf("the dashboard broke its own Content-Security-Policy: %q", v)
	}
	if out := b.Outside(); len(out) > 0 {
		t.Errorf("the page tried to reach beyond omahad: %q", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(exceptions) > 0 {
		t.Errorf("script errors: %q", exceptions)
	}
}

// shot writes a PNG screenshot of the whole page to dir/name.
func shot(t *testing.T, b *dashboardtest.Browser, dir, name string) {
	t.Helper()
	write(t, b, dir, name, chromedp.FullScreenshot(100))
}

// write saves the PNG that capture takes.
func write(t *testing.T, b *dashboardtest.Browser, dir, name string, capture chromedp.Action[[]byte]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, step)
	defer cancel()
	img, err := chromedp.Run(ctx, capture)
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Error(err)
		return
	}
	t.Logf("screenshot %s (%d KB)", p, len(img)>>10)
}
