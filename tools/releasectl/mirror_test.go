package releasectl_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/tools/mirror"
)

// TestMirrorOnce: releasectl mirror --once copies the upstream's beta version to the local
// stable channel, prints JSON status lines and writes the status file; an unreachable upstream
// exits 1 saying so.
func TestMirrorOnce(t *testing.T) {
	const app = "6f1c8f43-2b8a-4d8e-9c61-0d6f3b1f4e2a"
	f := newFixture(t)
	up := omahatest.New(t)
	tr := payloadtest.TrustRoot(t, 1, 0, f.key)
	up.CreateApp(t, app, tr)
	f.s.CreateApp(t, app, tr)
	pkg := up.Publish(t, "beta", up.BuildPayload(t, "5.1.0", f.key))

	dir := t.TempDir()
	status := filepath.Join(dir, "status.json")
	args := []string{"mirror", "--upstream", up.UpdateURL, "--pair", app + "/beta/amd64-usr=stable", "--once",
		"--dir", filepath.Join(dir, "m"), "--status-file", status, "--backoff", "1ms", "--max-backoff", "5ms"}
	out := f.ok(t, append(args, "--json")...)
	var phases []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev mirror.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if len(phases) == 0 || phases[len(phases)-1] != string(ev.Phase) {
			phases = append(phases, string(ev.Phase))
		}
	}
	if got := strings.Join(phases, " "); got != "check offer download published" {
		t.Fatalf("phases %q, want check offer download published\n%s", got, out)
	}
	f.s.App = app
	if st := f.s.Status(t); st.Channels[2].Name != "stable" || st.Channels[2].Packages["amd64-usr"].SHA256 != pkg.SHA256 {
		t.Fatalf("local channels %+v", st.Channels)
	}
	var stats mirror.Stats
	if b, err := os.ReadFile(status); err != nil || json.Unmarshal(b, &stats) != nil || stats.Published != 1 || stats.BytesDownloaded != pkg.Size {
		t.Fatalf("status file: %v %+v", err, stats)
	}

	// People get one line per step.
	out = f.ok(t, args...)
	if !strings.Contains(out, "beta/amd64-usr→stable: local channel stable already carries 5.1.0") {
		t.Fatalf("second run:\n%s", out)
	}

	up.HTTP.Close()
	code, out, errs := f.run(t, append(args, "--attempts", "2")...)
	if code != 1 || !strings.Contains(errs, "upstream "+up.UpdateURL+" is unreachable") || !strings.Contains(out, "retrying in") {
		t.Fatalf("unreachable upstream: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if code, _, errs := f.run(t, "mirror", "--pair", app+"/beta/amd64-usr"); code != 2 || !strings.Contains(errs, "--upstream") {
		t.Fatalf("no --upstream: exit %d, %s", code, errs)
	}
	if code, _, errs := f.run(t, "mirror", "--upstream", up.UpdateURL, "--pair", "beta/amd64-usr"); code != 2 || !strings.Contains(errs, "app/channel/board") {
		t.Fatalf("bad --pair: exit %d, %s", code, errs)
	}
}
