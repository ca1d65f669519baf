package demo_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/testimages/demo"
	"github.com/twinslot/twinslot/testimages/fleet"
)

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"one host", []string{"--hosts", "1"}, 2, "--hosts 1"},
		{"max not below hosts", []string{"--hosts", "3", "--max", "3"}, 2, "--max 3"},
		{"zero max", []string{"--max", "0"}, 2, "--max 0"},
		{"unknown flag", []string{"--nope"}, 2, "nope"},
		{"an argument", []string{"extra"}, 2, "too many arguments"},
		{"negative duration", []string{"--reboot-time", "-1s"}, 2, "durations must be positive"},
		{"help", []string{"--help"}, 0, "halt on the first failure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := demo.Main(t.Context(), tc.args, nil, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Fatalf("exit %d, want %d; output:\n%s%s", code, tc.code, out.String(), errOut.String())
			}
		})
	}
}

// TestDemo runs the real demo with three hosts (max 2) and checks the closing table: exit 0,
// 1.0.1 committed everywhere, one host with the broken version in its history, rolled back and
// keeping its slot, and the server's halt reason.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the demo run (a server, etcd and three hosts)")
	}
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := demo.Main(t.Context(), []string{"--hosts", "3", "--max", "2", "--dir", dir, "--json",
		"--check-interval", "500ms", "--reboot-time", "100ms"}, nil, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	var r demo.Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if !r.OK || len(r.Hosts) != 3 || r.HaltedReason == "" || !strings.Contains(r.HaltedReason, fleet.VersionBroken) {
		t.Fatalf("report %+v", r)
	}
	rolledBack := 0
	for _, h := range r.Hosts {
		if h.Version != fleet.VersionGood || !h.Committed {
			t.Errorf("%s: %s committed=%v", h.Name, h.Version, h.Committed)
		}
		switch h.History {
		case "1.0.0 A → 1.0.1 B ✓":
		case "1.0.0 A → 1.0.1 B ✓ → 1.0.2 A ✗ → 1.0.1 B ↩":
			rolledBack++
			if len(r.Holders) != 1 || r.Holders[0] != h.Name {
				t.Errorf("holders %v, want %s keeping its slot", r.Holders, h.Name)
			}
		default:
			t.Errorf("%s: history %q", h.Name, h.History)
		}
	}
	if rolledBack != 1 || r.RebootPeak < 1 || r.RebootPeak > 2 || r.HoldersPeak > 2 {
		t.Errorf("rolled back %d, reboot peak %d, holders peak %d", rolledBack, r.RebootPeak, r.HoldersPeak)
	}
	// The people's output (stderr with --json) has the closing table and the verdict.
	for _, want := range []string{"verdict: OK", "KEPT (rolled-back)", "group stable halted by the server", "$ releasectl promote --version 1.0.2"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, errOut.String())
		}
	}
}
