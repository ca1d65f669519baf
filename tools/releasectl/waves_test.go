package releasectl_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
)

// TestGroupWaves sets a group's waves and office hours with releasectl group set, sees them in
// groups, group show and its JSON, has bad specs refused with what is wrong (nothing stored),
// and clears both with none.
func TestGroupWaves(t *testing.T) {
	f := newAppFixture(t)
	f.ok(t, "publish", "--channel", "stable", f.s.BuildPayload(t, "1.0.0", f.key))
	out := f.ok(t, "group", "set", "stable", "--waves", "1%:1h,10%:2h,50%:4h,100%", "--office-hours", "Mon-Fri 09:00-17:00 Europe/Berlin")
	if !strings.Contains(out, "waves 1%:1h,10%:2h,50%:4h,100%, office hours Mon-Fri 09:00-17:00 Europe/Berlin") {
		t.Fatalf("group set: %q", out)
	}
	if out := f.ok(t, "groups"); !strings.Contains(out, "waves 1%:1h,10%:2h,50%:4h,100%") {
		t.Fatalf("groups:\n%s", out)
	}
	if out := f.ok(t, "group", "show", "stable"); !strings.Contains(out, "rollout of 1.0.0: wave 1 of 4 open (1% of hosts)") ||
		!strings.Contains(out, "office hours Mon-Fri 09:00-17:00 Europe/Berlin: ") {
		t.Fatalf("group show:\n%s", out)
	}
	var gs admin.GroupStatus
	if err := json.Unmarshal([]byte(f.ok(t, "group", "show", "--json", "stable")), &gs); err != nil {
		t.Fatal(err)
	}
	if gs.Group.Policy.Waves != "1%:1h,10%:2h,50%:4h,100%" || gs.Rollout == nil || gs.Rollout.Waves != 4 || gs.Rollout.SharePercent != 1 {
		t.Fatalf("group show --json: %+v %+v", gs.Group.Policy, gs.Rollout)
	}
	for _, bad := range []struct{ flag, spec, want string }{
		{"--office-hours", "Mon-Fri 09:00-25:00 Europe/Berlin", `"25:00" is not a time of day`},
		{"--office-hours", "Mon-Fri 09:00-17:00 Europe/Atlantis", `unknown time zone "Europe/Atlantis"`},
		{"--waves", "50%:1h,10%:1h,100%", "shares increase"},
	} {
		if code, _, errs := f.run(t, "group", "set", "stable", bad.flag, bad.spec); code != 1 || !strings.Contains(errs, bad.want) {
			t.Errorf("group set %s %q: exit %d, %q; want exit 1 saying %q", bad.flag, bad.spec, code, errs, bad.want)
		}
	}
	if out := f.ok(t, "group", "show", "stable"); !strings.Contains(out, "waves 1%:1h,10%:2h,50%:4h,100%, office hours Mon-Fri 09:00-17:00 Europe/Berlin") {
		t.Fatalf("refused specs changed the group:\n%s", out)
	}
	out = f.ok(t, "group", "set", "stable", "--waves", "none", "--office-hours", "none")
	if strings.Contains(out, "waves") || strings.Contains(out, "office hours") {
		t.Fatalf("group set none: %q", out)
	}
	if out := f.ok(t, "group", "show", "stable"); strings.Contains(out, "rollout") {
		t.Fatalf("group show without waves:\n%s", out)
	}
}
