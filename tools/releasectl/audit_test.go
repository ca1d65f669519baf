package releasectl_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
)

// newAppFixture is a fixture whose server has the twinslot app, created with releasectl.
func newAppFixture(t *testing.T) *fixture {
	f := newFixture(t)
	f.ok(t, "app", "create", "--id", payload.DefaultAppID, "--name", "twinslot", "--trust", f.trust)
	f.s.App = payload.DefaultAppID
	return f
}

// TestAudit makes changes with releasectl and reads them back with releasectl audit, as a
// table and as JSON, filtered by target.
func TestAudit(t *testing.T) {
	f := newAppFixture(t)
	f.ok(t, "publish", "--channel", "alpha", f.s.BuildPayload(t, "1.0.0", f.key))
	f.ok(t, "promote", "--version", "1.0.0", "--from", "alpha", "--to", "beta")
	f.ok(t, "group", "pause", "beta")

	out := f.ok(t, "audit")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("audit table:\n%s", out)
	}
	for i, want := range []string{"group.update", "promote", "package.publish", "app.create"} {
		if !strings.Contains(lines[i+1], want) || !strings.Contains(lines[i+1], "omahatest admin") || !strings.Contains(lines[i+1], "127.0.0.1") {
			t.Errorf("line %d %q: want %s by omahatest admin from 127.0.0.1", i+1, lines[i+1], want)
		}
	}
	var es []admin.AuditEntry
	if err := json.Unmarshal([]byte(f.ok(t, "audit", "--json", "--target", "apps/"+f.s.App+"/channels", "--limit", "1")), &es); err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Action != "promote" || es[0].Target != "apps/"+f.s.App+"/channels/beta" {
		t.Fatalf("audit --json --target channels --limit 1: %+v", es)
	}
	if code, _, errs := f.run(t, "audit", "--since", "last week"); code != 2 || !strings.Contains(errs, "RFC 3339") {
		t.Fatalf("bad --since: exit %d %s", code, errs)
	}
	if out := f.ok(t, "audit", "--since", "2000h", "--until", "1000h"); strings.Count(out, "\n") != 1 {
		t.Fatalf("audit of a window without changes:\n%s", out)
	}
}
