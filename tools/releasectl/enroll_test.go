package releasectl_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/payload"
)

// TestEnrollTokens: create (secret shown once), list (no secret), revoke; a group that
// requires enrollment and has a grant start timeout; bad flags refused before anything is sent.
func TestEnrollTokens(t *testing.T) {
	f := newFixture(t)
	f.ok(t, "app", "create", "--id", payload.DefaultAppID, "--name", "twinslot", "--trust", f.trust)
	f.s.App = payload.DefaultAppID
	out := f.ok(t, "group", "create", "--name", "fleet", "--channel", "stable", "--require-enrollment", "--grant-start-timeout", "10m")
	if !strings.Contains(out, "enrolled hosts only") || !strings.Contains(out, "grant start timeout 10m0s") {
		t.Fatalf("group create: %q", out)
	}
	out = f.ok(t, "group", "update", "fleet", "--anonymous", "flatcar")
	if !strings.Contains(out, "enrolled hosts only (+ Flatcar anonymously)") {
		t.Fatalf("group update: %q", out)
	}
	out = f.ok(t, "enroll-token", "create", "--group", "fleet", "--uses", "5", "--name", "rack 4")
	m := regexp.MustCompile(`(?m)^enrollment token ([0-9a-f]{12}) \(group [0-9a-f-]{36}, 0 of 5 uses, expires .*\); the secret is shown only now:\n(ts-enroll-\S+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("enroll-token create: %q", out)
	}
	id, secret := m[1], m[2]
	cl, err := omaha.NewClient([]string{f.s.UpdateURL}, omaha.ClientOptions{HTTPClient: f.s.HTTP.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Enroll(t.Context(), omaha.EnrollRequest{MachineID: strings.Repeat("ab", 16), Token: secret}); err != nil {
		t.Fatal(err)
	}
	out = f.ok(t, "enroll-token", "list")
	if !regexp.MustCompile(`(?m)^`+id+`\s+rack 4\s+.*1 of 5 uses`).MatchString(out) || strings.Contains(out, "ts-enroll-") {
		t.Fatalf("enroll-token list:\n%s", out)
	}
	if out := f.ok(t, "unenroll", strings.Repeat("ab", 16)); !strings.Contains(out, "host "+strings.Repeat("ab", 16)+" unenrolled") {
		t.Fatalf("unenroll: %q", out)
	}
	if code, _, errs := f.run(t, "unenroll", strings.Repeat("ab", 16)); code == 0 || !strings.Contains(errs, "not enrolled") {
		t.Fatalf("unenroll twice: %d %q", code, errs)
	}
	if out := f.ok(t, "enroll-token", "revoke", id); !strings.Contains(out, "enrollment token "+id+" revoked") {
		t.Fatalf("revoke: %q", out)
	}
	if _, err := cl.Enroll(t.Context(), omaha.EnrollRequest{MachineID: strings.Repeat("cd", 16), Token: secret}); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("enroll with a revoked token: %v", err)
	}
	for _, bad := range [][]string{
		{"enroll-token", "create", "--uses", "-1"},
		{"enroll-token", "create", "--expires", "-1h"},
		{"enroll-token", "revoke"},
		{"group", "update", "fleet", "--anonymous", "everyone"},
		{"group", "update", "fleet", "--grant-start-timeout", "-1m"},
	} {
		if code, _, errs := f.run(t, bad...); code == 0 || errs == "" {
			t.Fatalf("releasectl %v: exit %d %q", bad, code, errs)
		}
	}
	if code, _, errs := f.run(t, "enroll-token", "revoke", "nope"); code == 0 || !strings.Contains(errs, "enroll-token list") {
		t.Fatalf("revoke unknown: %d %q", code, errs)
	}
}
