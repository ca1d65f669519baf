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
	etc := filepath.Join(dir, "etc.conf")
	usr := filepath.Join(dir, "usr.conf")
	must(t, os.WriteFile(etc, []byte("GROUP=alpha\nREBOOT_WINDOW_START=Thu 04:00\n"), 0o644))
	must(t, os.WriteFile(usr, []byte("GROUP=stable\nSERVER=http://127.0.0.1:1/v1/update/\nREBOOT_WINDOW_LENGTH=1h\n"), 0o644))

	c, err := LoadEnv([]string{"LOCKSMITHD_REBOOT_WINDOW_START=Sun 01:00", "HOME=/root"}, etc, usr, filepath.Join(dir, "missing.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Group != "alpha" || c.Server != "http://127.0.0.1:1/v1/update/" {
		t.Errorf("group/server = %q/%q", c.Group, c.Server)
	}
	if c.RebootWindowStart != "Sun 01:00" || c.RebootWindowLength != "1h" {
		t.Errorf("window = %q + %q", c.RebootWindowStart, c.RebootWindowLength)
	}
	if c.RebootStrategy != StrategyReboot {
		t.Errorf("default strategy = %q", c.RebootStrategy)
	}
	if _, ok := c.Values["HOME"]; ok {
		t.Error("unrelated environment leaked into the config")
	}
}

func TestFromValuesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]string
		want string
	}{
		{"unknown strategy", map[string]string{"REBOOT_STRATEGY": "best-effort"}, "not one of"},
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
