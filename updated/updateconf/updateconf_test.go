package updateconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"no equals", "SERVER http://x\n", "no '='"},
		{"bad key", "1GROUP=x\n", "invalid key"},
		{"key with space", "MY KEY=x\n", "invalid key"},
		{"unterminated quote", "GROUP=\"beta\n", "unterminated quote"},
		{"line too long", "GROUP=" + strings.Repeat("x", MaxLineLen) + "\n", "longer than"},
		{"file too large", strings.Repeat("# comment line\n", MaxFileSize/10), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("update.conf", strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	var se *SyntaxError
	_, err := Parse("u.conf", strings.NewReader("# c\n\nBROKEN\n"))
	if !errors.As(err, &se) || se.Line != 3 || se.File != "u.conf" {
		t.Fatalf("want SyntaxError at u.conf:3, got %v", err)
	}
}

func TestParse(t *testing.T) {
	in := `# comment
SERVER=https://updates.example.test/v1/update/
  GROUP = "beta"
MACHINE_ALIAS='rack 4 host 2'
export REBOOT_STRATEGY=etcd-lock
EMPTY=
`
	got, err := Parse("u", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"SERVER":          "https://updates.example.test/v1/update/",
		"GROUP":           "beta",
		"MACHINE_ALIAS":   "rack 4 host 2",
		"REBOOT_STRATEGY": "etcd-lock",
		"EMPTY":           "",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	// A Flatcar host's files with twinslot's on top, as DefaultPaths orders them.
	image := write("usr.conf", "GROUP=stable\nSERVER=http://image.invalid/\nHEALTH_TIMEOUT=5m\n")
	coreos := write("coreos.conf", "GROUP=alpha\nREBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_REBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\n")
	flatcar := write("flatcar.conf", "GROUP=beta\nSERVER=http://127.0.0.1:1/v1/update/\nREBOOT_WINDOW_START=Sat 02:00\n")
	twinslot := write("twinslot.conf", "GROUP=nightly\n")

	c, err := LoadEnv([]string{"LOCKSMITHD_REBOOT_WINDOW_LENGTH=30m", "HOME=/root"}, image, coreos, flatcar, twinslot, filepath.Join(dir, "missing.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, got, want, file, as string }{
		{"GROUP", c.Group, "nightly", twinslot, "GROUP"},
		{"SERVER", c.Server, "http://127.0.0.1:1/v1/update/", flatcar, "SERVER"},
		{"REBOOT_STRATEGY", c.RebootStrategy, "etcd-lock", coreos, "REBOOT_STRATEGY"},
		// A later file wins over an earlier file's LOCKSMITHD_ spelling.
		{"REBOOT_WINDOW_START", c.RebootWindowStart, "Sat 02:00", flatcar, "REBOOT_WINDOW_START"},
		{"REBOOT_WINDOW_LENGTH", c.RebootWindowLength, "30m", FromEnvironment, "LOCKSMITHD_REBOOT_WINDOW_LENGTH"},
		{"HEALTH_TIMEOUT", c.Values["HEALTH_TIMEOUT"], "5m", image, "HEALTH_TIMEOUT"},
	} {
		o, ok := c.Origin(tc.key)
		if tc.got != tc.want || !ok || o.File != tc.file || o.Key != tc.as {
			t.Errorf("%s = %q from %+v (%v), want %q from %s as %s", tc.key, tc.got, o, ok, tc.want, tc.file, tc.as)
		}
	}
	if _, ok := c.Origin("MACHINE_ALIAS"); ok {
		t.Error("an unset key has an origin")
	}
	if _, ok := c.Values["HOME"]; ok {
		t.Error("unrelated environment leaked into the config")
	}
	if _, ok := c.Values["LOCKSMITHD_REBOOT_WINDOW_START"]; ok {
		t.Error("the LOCKSMITHD_ spelling is kept beside its plain key")
	}

	// Within one file the LOCKSMITHD_ spelling wins, as in CoreOS locksmithd.
	both := write("both.conf", "REBOOT_WINDOW_START=01:00\nLOCKSMITHD_REBOOT_WINDOW_START=02:00\nREBOOT_WINDOW_LENGTH=1h\n")
	if c, err := Load(both); err != nil || c.RebootWindowStart != "02:00" {
		t.Errorf("same file: start %q, %v", c.RebootWindowStart, err)
	}

	// A bad value names the file it came from and changes nothing.
	bad := write("bad.conf", "REBOOT_STRATEGY=best-effort\n")
	var ve *ValueError
	if _, err := Load(coreos, bad); !errors.As(err, &ve) || ve.Origin.File != bad || !strings.Contains(err.Error(), "removed") {
		t.Errorf("best-effort: %v", err)
	}
	if _, err := Load(bad, coreos); err != nil {
		t.Errorf("a bad value overridden by a later file: %v", err)
	}
}

func TestFromValuesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]string
		want string
	}{
		{"unknown strategy", map[string]string{"REBOOT_STRATEGY": "sometimes"}, "not one of"},
		{"half a window", map[string]string{"REBOOT_WINDOW_START": "04:00"}, "both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromValues(tc.vals)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	c, err := FromValues(map[string]string{"SERVER": "disabled"})
	if err != nil || !c.Disabled() || c.Group != DefaultGroup {
		t.Fatalf("disabled config: %+v, %v", c, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
