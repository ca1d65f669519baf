package releasectl_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/tools/releasectl"
)

type fixture struct {
	s     *omahatest.Server
	key   *payloadtest.Key
	trust string // path of trust.json
	env   releasectl.Env
}

func newFixture(t *testing.T) *fixture {
	s := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.WriteTrustRoot(t, t.TempDir(), payloadtest.TrustRoot(t, 1, 0, key))
	return &fixture{s: s, key: key, trust: trust, env: releasectl.Env{Server: s.URL, Token: s.AdminToken, HTTP: s.HTTP.Client()}}
}

func (f *fixture) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := f.env.Main(t.Context(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its stdout.
func (f *fixture) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := f.run(t, args...)
	if code != 0 {
		t.Fatalf("releasectl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// TestRelease walks a release: app, publish to alpha, promote to beta, a canary group, status.
func TestRelease(t *testing.T) {
	f := newFixture(t)
	out := f.ok(t, "app", "create", "--id", payload.DefaultAppID, "--name", "twinslot", "--trust", f.trust)
	if !strings.Contains(out, "created app twinslot") {
		t.Fatalf("app create: %q", out)
	}
	f.s.App = payload.DefaultAppID
	p1 := f.s.BuildPayload(t, "1.0.0", f.key)
	p2 := f.s.BuildPayload(t, "1.1.0", f.key)
	out = f.ok(t, "publish", "--channel", "alpha", p1)
	if !regexp.MustCompile(`published 1\.0\.0 for amd64-usr \(.*sha256 [0-9a-f]{64}\) to alpha`).MatchString(out) {
		t.Fatalf("publish: %q", out)
	}
	out = f.ok(t, "publish", "--channel", "alpha", "--json", p2)
	var pkg admin.Package
	if err := json.Unmarshal([]byte(out), &pkg); err != nil || pkg.Version != "1.1.0" || pkg.FileName != "update-1.1.0.tsp" {
		t.Fatalf("publish --json: %v %q", err, out)
	}
	if out := f.ok(t, "promote", "--version", "1.1.0", "--from", "alpha", "--to", "beta"); out != "beta now carries 1.1.0 for amd64-usr\n" {
		t.Fatalf("promote: %q", out)
	}
	out = f.ok(t, "channels")
	if !regexp.MustCompile(`(?m)^alpha\s+amd64-usr\s+1\.1\.0\s+1\s`).MatchString(out) || !regexp.MustCompile(`(?m)^stable\s+-`).MatchString(out) {
		t.Fatalf("channels:\n%s", out)
	}
	out = f.ok(t, "group", "create", "--name", "canary", "--channel", "beta", "--max-updates", "1", "--period", "2h", "--update-timeout", "30m")
	if !strings.Contains(out, "follows beta: enabled, max 1 per 2h0m0s, timeout 30m0s") {
		t.Fatalf("group create: %q", out)
	}
	// Two hosts in the canary group: the cap lets one through.
	a, b := f.s.Host(t, "canary", "1.0.0"), f.s.Host(t, "canary", "1.0.0")
	if a.Check(t) == nil || b.Check(t) != nil {
		t.Fatal("canary cap not applied")
	}
	out = f.ok(t, "group", "pause", "canary")
	if !strings.Contains(out, "PAUSED") {
		t.Fatalf("pause: %q", out)
	}
	out = f.ok(t, "group", "update", "canary", "--enabled=true", "--max-updates", "0")
	if !strings.Contains(out, "enabled, no cap") {
		t.Fatalf("update: %q", out)
	}
	if b.Check(t) == nil {
		t.Fatal("no update after lifting the cap")
	}
	f.s.Flush(t)
	out = f.ok(t, "status")
	for _, want := range []string{`beta\s+1\.1\.0 \(amd64-usr\)`, `canary\s+beta\s+enabled, no cap, timeout 30m0s\s+2\s+1\.0\.0\s+granted\s+2`, `stable\s+stable\s+enabled, no cap, timeout 1h0m0s\s+0`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("status lacks %s:\n%s", want, out)
		}
	}
	out = f.ok(t, "instances", "--group", "canary", "--json")
	var ins []admin.Instance
	if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins) != 2 {
		t.Fatalf("instances --json: %v %q", err, out)
	}
	out = f.ok(t, "groups")
	if !regexp.MustCompile(`(?m)^canary\s+[0-9a-f-]{36}\s+beta\s+enabled, no cap`).MatchString(out) {
		t.Fatalf("groups:\n%s", out)
	}
	out = f.ok(t, "events", "--machine", a.MachineID)
	if !strings.Contains(out, "update complete: success reboot") {
		t.Fatalf("events:\n%s", out)
	}
	out = f.ok(t, "withdraw", "--version", "1.1.0")
	if out != "withdrew 1.1.0 for amd64-usr\n" {
		t.Fatalf("withdraw: %q", out)
	}
	out = f.ok(t, "packages")
	if !regexp.MustCompile(`(?m)^1\.1\.0\s.*withdrawn$`).MatchString(out) {
		t.Fatalf("packages:\n%s", out)
	}
	trust2 := payloadtest.WriteTrustRoot(t, t.TempDir(), payloadtest.TrustRoot(t, 1, 0, f.key, payloadtest.NewKey(t, "")))
	if out := f.ok(t, "app", "set-trust", "--trust", trust2); !strings.Contains(out, "replaced the trust root") {
		t.Fatalf("set-trust: %q", out)
	}
	if out := f.ok(t, "channel", "set-url", "--channel", "stable", "https://cdn.example/{version}/"); !strings.Contains(out, "cdn.example") {
		t.Fatalf("set-url: %q", out)
	}
	if out := f.ok(t, "app", "list"); !strings.Contains(out, payload.DefaultAppID) {
		t.Fatalf("app list: %q", out)
	}
}

// TestErrors checks usage errors (exit 2) and refusals (exit 1) say what to do.
func TestErrors(t *testing.T) {
	f := newFixture(t)
	f.ok(t, "app", "create", "--name", "twinslot", "--trust", f.trust)
	f.s.App = payload.DefaultAppID
	unsigned := filepath.Join(t.TempDir(), "unsigned.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(64<<10, 1), unsigned, payloadtest.Options("2.0.0"))
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"version":99}`), 0o644)
	ro := *f
	ro.env.Token = f.s.ReadOnlyToken
	anon := *f
	anon.env.Token = ""
	wrong := *f
	wrong.env.Token = "tst_000000000000_x"
	for _, tc := range []struct {
		name string
		f    *fixture
		args []string
		code int
		msg  string
	}{
		{"no command", f, nil, 2, "no command"},
		{"unknown command", f, []string{"deploy"}, 2, "unknown command"},
		{"publish without file", f, []string{"publish"}, 2, "missing a payload FILE"},
		{"promote without flags", f, []string{"promote", "--version", "1"}, 2, "--version, --from and --to are required"},
		{"no token", &anon, []string{"channels"}, 2, "RELEASECTL_TOKEN"},
		{"wrong token", &wrong, []string{"channels"}, 1, "refused the token"},
		{"read-only write", &ro, []string{"group", "pause", "stable"}, 1, "read-only"},
		{"unsigned payload", f, []string{"publish", "--channel", "alpha", unsigned}, 1, "refused the payload"},
		{"missing file", f, []string{"publish", filepath.Join(t.TempDir(), "nope.tsp")}, 1, "no such file"},
		{"bad trust", f, []string{"app", "set-trust", "--trust", bad}, 1, "bad.json"},
		{"promote unknown version", f, []string{"promote", "--version", "9.9.9", "--from", "alpha", "--to", "beta"}, 1, "does not carry version 9.9.9"},
		{"unknown group", f, []string{"group", "pause", "nope"}, 1, "not found"},
		{"update nothing", f, []string{"group", "update", "stable"}, 2, "nothing to change"},
		{"negative halt on create", f, []string{"group", "create", "--name", "x", "--channel", "beta", "--halt-on-failures", "-1"}, 2, "--halt-on-failures -1"},
		{"negative halt on update", f, []string{"group", "update", "stable", "--halt-on-failures", "-2"}, 2, "--halt-on-failures -2"},
		{"bad app", f, []string{"channels", "--app", "x"}, 2, "not a UUID"},
		{"server flag after command", f, []string{"channels", "--server", "ftp://x"}, 2, "want http(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := tc.f.run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Fatalf("exit %d (want %d)\nstdout %q\nstderr %q (want %q)", code, tc.code, out, errs, tc.msg)
			}
		})
	}
	if code, out, _ := f.run(t, "--help"); code != 0 || !strings.Contains(out, "publish") {
		t.Fatalf("--help: %d %q", code, out)
	}
	if code, out, _ := f.run(t, "group", "create", "--help"); code != 0 || !strings.Contains(out, "--max-updates") {
		t.Fatalf("group create --help: %d %q", code, out)
	}
	// Global flags before the command work too.
	g := *f
	g.env = releasectl.Env{HTTP: f.env.HTTP}
	if code, out, errs := g.run(t, "--server", f.s.URL, "--token", f.s.AdminToken, "channels"); code != 0 || !strings.Contains(out, "alpha") {
		t.Fatalf("global flags: %d %q %q", code, out, errs)
	}
}

// TestHalt checks --halt-on-failures, and that groups and status show a halted group and why,
// in tables and in --json.
func TestHalt(t *testing.T) {
	f := newFixture(t)
	f.ok(t, "app", "create", "--name", "twinslot", "--trust", f.trust)
	f.s.App = payload.DefaultAppID
	f.ok(t, "publish", "--channel", "beta", f.s.BuildPayload(t, "1.0.2", f.key))
	out := f.ok(t, "group", "create", "--name", "canary", "--channel", "beta", "--halt-on-failures", "1")
	if !strings.Contains(out, "follows beta: enabled, no cap, timeout 1h0m0s, halt at 1 failed") {
		t.Fatalf("group create: %q", out)
	}
	if out := f.ok(t, "group", "update", "canary", "--halt-on-failures", "3"); !strings.Contains(out, "halt at 3 failed") {
		t.Fatalf("group update: %q", out)
	}
	f.ok(t, "group", "update", "canary", "--halt-on-failures", "1")
	h := f.s.Host(t, "canary", "1.0.0")
	if h.Check(t) == nil {
		t.Fatal("no offer")
	}
	h.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	f.s.Flush(t)
	reason := "version 1.0.2: 1 host(s) failed (machine " + h.MachineID + ", error 1001 health gate); halt_on_failures=1"
	for _, cmd := range []string{"groups", "status"} {
		out := f.ok(t, cmd)
		if !regexp.MustCompile(`(?m)^canary\s.*HALTED, no cap`).MatchString(out) || !strings.Contains(out, "canary since ") || !strings.Contains(out, reason) {
			t.Errorf("%s does not show the halt:\n%s", cmd, out)
		}
	}
	var gs []admin.Group
	if err := json.Unmarshal([]byte(f.ok(t, "groups", "--json")), &gs); err != nil {
		t.Fatal(err)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(f.ok(t, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	var halted []string
	for _, g := range gs {
		halted = append(halted, g.Policy.HaltedReason)
	}
	for _, g := range st.Groups {
		halted = append(halted, g.Group.Policy.HaltedReason)
	}
	if n := strings.Count(strings.Join(halted, "\n"), reason); n != 2 {
		t.Fatalf("--json shows the reason %d times, want 2: %q", n, halted)
	}
	out = f.ok(t, "group", "resume", "canary")
	if !strings.Contains(out, "enabled") || strings.Contains(out, "halted") {
		t.Fatalf("resume: %q", out)
	}
}

// TestHelpHidesToken: no help text shows the token from the environment (issue 18, hole 3);
// the token from the environment is still the one used.
func TestHelpHidesToken(t *testing.T) {
	const secret = "tst_secretsecret_from_the_environment"
	env := releasectl.Env{Server: "http://127.0.0.1:1", Token: secret}
	for _, args := range [][]string{{"--help"}, {"--token", "-h"}, {"publish", "--help"}, {"channels", "-h"}, {"group", "create", "--help"}, {"--server", "http://x", "status", "--help"}} {
		var out, errb bytes.Buffer
		code := env.Main(t.Context(), args, strings.NewReader(""), &out, &errb)
		if strings.Contains(out.String()+errb.String(), "secretsecret") {
			t.Errorf("releasectl %s (exit %d) shows the token:\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
		}
	}
	// Used all the same: a server that is down is reached, not a usage error about the token.
	var out, errb bytes.Buffer
	if code := env.Main(t.Context(), []string{"channels"}, strings.NewReader(""), &out, &errb); code != 1 || strings.Contains(errb.String(), "no token") {
		t.Fatalf("channels with the token from the environment: %d %q", code, errb.String())
	}
}

// TestBracedAppID: an app id in braces and capitals, as Flatcar writes them, names the same app
// in 'payload build', 'app create' and publish, which takes the app from the payload when --app
// is not given (issue 18, hole 8).
func TestBracedAppID(t *testing.T) {
	f := newFixture(t)
	const braced, bare = "{3C2B1A00-0000-4000-8000-00000000ABCD}", "3c2b1a00-0000-4000-8000-00000000abcd"
	f.ok(t, "app", "create", "--id", braced, "--name", "flatcar-like", "--trust", f.trust)
	build := func(version string) string {
		o := payloadtest.Options(version)
		o.AppID = braced
		p := filepath.Join(t.TempDir(), version+".tsp")
		payloadtest.BuildBytes(t, payloadtest.Image(64<<10, uint64(len(version))), p, o, f.key)
		return p
	}
	if out := f.ok(t, "publish", "--channel", "alpha", build("2.0.0")); !strings.Contains(out, "published 2.0.0") {
		t.Fatalf("publish without --app: %q", out)
	}
	if out := f.ok(t, "publish", "--app", bare, build("2.0.1")); !strings.Contains(out, "published 2.0.1") {
		t.Fatalf("publish --app %s: %q", bare, out)
	}
	out := f.ok(t, "packages", "--app", braced)
	if !strings.Contains(out, "2.0.0") || !strings.Contains(out, "2.0.1") {
		t.Fatalf("packages of %s:\n%s", braced, out)
	}
}

// TestGlobalFlagsBeforeCommand: --app and --json work before the command as after it, as the
// help says (issue 18, item 13).
func TestGlobalFlagsBeforeCommand(t *testing.T) {
	f := newFixture(t)
	f.ok(t, "app", "create", "--id", payload.DefaultAppID, "--name", "twinslot", "--trust", f.trust)
	for _, args := range [][]string{
		{"--json", "channels"},
		{"channels", "--json"},
		{"--app", "{" + strings.ToUpper(payload.DefaultAppID) + "}", "--json", "channels"},
		{"--json", "channels", "--app", payload.DefaultAppID},
	} {
		out := f.ok(t, args...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(out, "alpha") {
			t.Errorf("releasectl %s: not JSON with the channels: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if code, _, errs := f.run(t, "--app", "x", "channels"); code != 2 || !strings.Contains(errs, "not a UUID") {
		t.Fatalf("--app x before the command: %d %q", code, errs)
	}
}
