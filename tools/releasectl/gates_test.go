package releasectl_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
)

// TestGatedPromote sets a gate with releasectl, sees promote refused with a table of checks
// and what to do, forces it with a reason, and finds the reason in releasectl audit.
func TestGatedPromote(t *testing.T) {
	f := newAppFixture(t)
	f.ok(t, "publish", "--channel", "beta", f.s.BuildPayload(t, "1.0.0", f.key))
	out := f.ok(t, "gate", "set", "--channel", "stable", "--min-soak", "24h", "--min-committed", "5", "--max-rollbacks", "-1")
	if !strings.Contains(out, "gate of stable: soak 24h0m0s, at least 5 committed, at most 0 failed and any rolled back") {
		t.Fatalf("gate set: %q", out)
	}
	if out := f.ok(t, "gate", "set", "--channel", "beta", "--min-soak", "1h", "--auto"); !strings.Contains(out, "the server promotes into beta by itself") {
		t.Fatalf("gate set --auto: %q", out)
	}
	if out := f.ok(t, "gates"); !strings.Contains(out, "stable") || !strings.Contains(out, "any") || !strings.Contains(out, "true") {
		t.Fatalf("gates:\n%s", out)
	}
	if out := f.ok(t, "gate", "check", "--version", "1.0.0", "--from", "beta", "--to", "stable"); !strings.Contains(out, "min_committed") || !strings.Contains(out, "5 more needed") {
		t.Fatalf("gate check:\n%s", out)
	}
	code, _, errs := f.run(t, "promote", "--version", "1.0.0", "--from", "beta", "--to", "stable")
	for _, want := range []string{"promotion refused: the gate of stable does not pass", "min_soak", "24h0m0s", "NO", "committed hosts: has 0 of 5 (5 more needed)", "--force --reason"} {
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("refused promote (exit %d) lacks %q:\n%s", code, want, errs)
		}
	}
	if code, _, errs := f.run(t, "promote", "--version", "1.0.0", "--from", "beta", "--to", "stable", "--force"); code != 2 || !strings.Contains(errs, "--reason") {
		t.Fatalf("--force without --reason: exit %d %s", code, errs)
	}
	if out := f.ok(t, "promote", "--version", "1.0.0", "--from", "beta", "--to", "stable", "--force", "--reason", "hotfix for CVE-2026-1"); !strings.Contains(out, "stable now carries 1.0.0") {
		t.Fatalf("forced promote: %q", out)
	}
	var es []admin.AuditEntry
	if err := json.Unmarshal([]byte(f.ok(t, "audit", "--json", "--limit", "1")), &es); err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Action != "promote" || !strings.Contains(string(es[0].Detail), "hotfix for CVE-2026-1") || !strings.Contains(string(es[0].Detail), "forced_past") {
		t.Fatalf("audit of the forced promotion: %+v", es)
	}
	if out := f.ok(t, "gate", "delete", "--channel", "stable"); !strings.Contains(out, "removed the gate of stable") {
		t.Fatalf("gate delete: %q", out)
	}
	if out := f.ok(t, "gate", "check", "--version", "1.0.0", "--from", "beta", "--to", "stable"); !strings.Contains(out, "stable has no promotion gate") {
		t.Fatalf("gate check without a gate: %q", out)
	}
}
