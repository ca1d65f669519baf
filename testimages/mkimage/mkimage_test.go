package mkimage

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition/esp"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(t.Context(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512MiB": 512 << 20, "6GiB": 6 << 30, "170M": 170 << 20, "4096": 4096, "8K": 8192, " 1G ": 1 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "0", "1.5G", "12TB", "99999999999G"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "no command", args: nil, code: 2, stderr: "no command given"},
		{name: "help", args: []string{"--help"}, code: 0, stdout: "install"},
		{name: "disk help", args: []string{"disk", "--help"}, code: 0, stdout: "Flatcar's partitions"},
		{name: "usr help", args: []string{"usr", "-h"}, code: 0, stdout: "-change"},
		{name: "install help", args: []string{"install", "--help"}, code: 0, stdout: "inactive slot"},
		{name: "boot help", args: []string{"boot", "--help"}, code: 0, stdout: "gptprio.next"},
		{name: "disk without -o", args: []string{"disk", "-version", "1"}, code: 2, stderr: "-o is required"},
		{name: "disk without version", args: []string{"disk", "-o", "x"}, code: 2, stderr: "-version is required"},
		{name: "bad size", args: []string{"disk", "-o", "x", "-version", "1", "-size", "lots"}, code: 2, stderr: "bad size"},
		{name: "usr change without base", args: []string{"usr", "-o", "x", "-version", "1", "-change", "0.1"}, code: 2, stderr: "-change needs -base"},
		{name: "install one arg", args: []string{"install", "d"}, code: 2, stderr: "missing DISK and USR-IMAGE"},
		{name: "boot missing disk file", args: []string{"boot", filepath.Join(dir, "nope.img")}, code: 1, stderr: "no such file"},
		{name: "disk too small", args: []string{"disk", "-o", filepath.Join(dir, "d.img"), "-version", "1", "-size", "8MiB"}, code: 1, stderr: "below the minimum"},
		{name: "os help", args: []string{"os", "--help"}, code: 0, stdout: "--usr-only"},
		{name: "os without -o", args: []string{"os", "--version", "1", "--cache", dir}, code: 2, stderr: "output directory is required"},
		{name: "os without cache", args: []string{"os", "-o", filepath.Join(dir, "os"), "--version", "1"}, code: 2, stderr: "cache directory is required"},
		{name: "os without bin", args: []string{"os", "-o", filepath.Join(dir, "os"), "--version", "1", "--cache", dir}, code: 2, stderr: "--bin DIR"},
		{name: "os bad version", args: []string{"os", "-o", filepath.Join(dir, "os"), "--version", "1 0", "--cache", dir}, code: 2, stderr: "may only hold"},
		{name: "os bad filler", args: []string{"os", "-o", filepath.Join(dir, "os"), "--version", "1", "--filler", "lots"}, code: 2, stderr: "bad size"},
		{name: "os extra argument", args: []string{"os", "-o", filepath.Join(dir, "os"), "--version", "1", "x"}, code: 2, stderr: "no arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
				t.Fatalf("code %d stdout %q stderr %q; want %d %q %q", code, out, errs, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestDefaultCache(t *testing.T) {
	for _, tc := range []struct{ env, home, want string }{
		{"/c", "/root", "/c"},
		{"", "/home/u", "/home/u/.cache/twinslot"},
		{"", "", ""},
	} {
		if got := DefaultCache(tc.env, tc.home); got != tc.want {
			t.Errorf("DefaultCache(%q, %q) = %q; want %q", tc.env, tc.home, got, tc.want)
		}
	}
}

// TestWalk runs the walk through the CLI.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	disk, usr := filepath.Join(dir, "disk.img"), filepath.Join(dir, "usr.img")
	mustRun := func(want string, args ...string) string {
		t.Helper()
		code, out, errs := run(t, args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("mkimage %v: code %d\nstdout %s\nstderr %s\nwant %q", args, code, out, errs, want)
		}
		return out
	}
	mustRun("USR-A 21.0 MiB holds 1.0.0 amd64-usr", "disk", "-o", disk, "-version", "1.0.0", "-size", "64MiB")
	mustRun("/usr 1.0.1 amd64-usr", "usr", "-o", usr, "-version", "1.0.1", "-size", "21MiB")
	mustRun("installed 1.0.1 into USR-B (#4): P=2 T=1 S=0", "install", disk, usr)
	out := mustRun(`"slot": "USR-B"`, "boot", disk, "--json")
	var r BootResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Version != "1.0.1" || r.Tries != 0 || r.Successful {
		t.Fatalf("boot JSON %+v %v", r, err)
	}
	mustRun("booted USR-A (#3): version 1.0.0 amd64-usr (P=1 T=0 S=1)", "boot", disk)
	usr2 := filepath.Join(dir, "usr2.img")
	mustRun("10% of the files", "usr", "-o", usr2, "-version", "1.0.2", "-base", usr, "-change", "0.1", "-broken")
	mustRun("installed 1.0.2 into USR-B", "install", disk, usr2)
	mustRun("broken: its health check will fail", "boot", disk)

	kf, usr3 := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "usr3.img")
	if err := os.WriteFile(kf, []byte("a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun("/usr 1.0.3", "usr", "-o", usr3, "-version", "1.0.3", "-size", "8MiB", "-kernel", kf, "-initrd", kf)
	b, err := os.ReadFile(usr3)
	if err != nil {
		t.Fatal(err)
	}
	if k, _, err := esp.FromSlot(bytes.NewReader(b), int64(len(b))); err != nil || k.Size != 8 {
		t.Fatalf("the image's kernel: %+v, %v", k, err)
	}
}
