package updatectl_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/updated/updatectl"
)

// A Flatcar host's files under a root, with twinslot's on top: updatectl config shows each
// effective value and the file it came from.
func TestConfigShowsOrigins(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	coreos := write("etc/coreos/update.conf", "GROUP=alpha\nREBOOT_STRATEGY=etcd-lock\n")
	flatcar := write("etc/flatcar/update.conf", "GROUP=beta\nSERVER=http://127.0.0.1:1/v1/update/\nLOCKSMITHD_REBOOT_WINDOW_START=Sat 02:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\nDOWNLOAD_PASSWORD=hunter2\nPCR_POLICY_SERVER=http://pcr.invalid/\n")
	twinslot := write("etc/twinslot/update.conf", "GROUP=nightly\n")

	code, out, errs := ctl(t, updatectl.Env{}, "config", "--root", root)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		filepath.Join(root, "usr/share/twinslot/update.conf") + " (missing)",
		"GROUP  nightly",
		"REBOOT_STRATEGY  etcd-lock",
		"REBOOT_WINDOW_START  Sat 02:00",
		flatcar + " (as LOCKSMITHD_REBOOT_WINDOW_START)",
		"HEALTH_TIMEOUT  5m",
		"(default)",
		"MACHINE_ALIAS  -",
		"(not set)",
		"PCR_POLICY_SERVER",
	} {
		if !strings.Contains(squeeze(out), squeeze(want)) {
			t.Errorf("config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("the download password is shown:\n%s", out)
	}

	var rep updatectl.ConfigReport
	for _, args := range [][]string{{"config", "--root", root, "--json"}, {"--json", "config", "--root", root}} {
		code, out, errs = ctl(t, updatectl.Env{}, args...)
		if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil {
			t.Fatalf("%q: exit %d, %v: %s %s", args, code, err, out, errs)
		}
	}
	got := map[string]updatectl.ConfigValue{}
	for _, v := range rep.Values {
		got[v.Key] = v
	}
	for _, want := range []updatectl.ConfigValue{
		{Key: "GROUP", Value: "nightly", File: twinslot, SetAs: "GROUP"},
		{Key: "SERVER", Value: "http://127.0.0.1:1/v1/update/", File: flatcar, SetAs: "SERVER"},
		{Key: "REBOOT_STRATEGY", Value: "etcd-lock", File: coreos, SetAs: "REBOOT_STRATEGY"},
		{Key: "REBOOT_WINDOW_LENGTH", Value: "1h", File: flatcar, SetAs: "LOCKSMITHD_REBOOT_WINDOW_LENGTH"},
		{Key: "DOWNLOAD_PASSWORD", Value: "(set)", File: flatcar, SetAs: "DOWNLOAD_PASSWORD"},
		{Key: "HEALTH_TIMEOUT", Value: "5m", Default: true},
	} {
		if got[want.Key] != want {
			t.Errorf("%s: %+v, want %+v", want.Key, got[want.Key], want)
		}
	}
	if len(rep.Files) != 4 || !rep.Files[3].Present || rep.Files[3].Path != twinslot || rep.Files[0].Present {
		t.Errorf("files %+v", rep.Files)
	}

	// A bad value is reported with its file, and --config reads only that file.
	write("etc/twinslot/update.conf", "REBOOT_STRATEGY=best-effort\n")
	if code, _, errs := ctl(t, updatectl.Env{}, "config", "--root", root); code != 1 || !strings.Contains(errs, twinslot) {
		t.Errorf("bad value: exit %d: %s", code, errs)
	}
	if code, out, errs := ctl(t, updatectl.Env{}, "config", "--config", coreos); code != 0 || !strings.Contains(squeeze(out), "GROUP alpha "+coreos) {
		t.Errorf("--config: exit %d: %s %s", code, out, errs)
	}
}

// squeeze collapses runs of blanks, so table columns compare as single spaces.
func squeeze(s string) string { return strings.Join(strings.Fields(s), " ") }
