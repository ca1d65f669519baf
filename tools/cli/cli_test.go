package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func testCommands(got *[]string, verbose *bool) []Command {
	run := func(ctx context.Context, stdio IO, args []string) error {
		fs := stdio.FlagSet("tool verify", "[flags] FILE", "Verify FILE.")
		trust := fs.String("trust", "", "trust root")
		fs.BoolVar(verbose, "v", false, "verbose")
		pos, err := Parse(fs, args)
		if err != nil {
			return err
		}
		if err := NArgs(pos, 1, 1, "FILE"); err != nil {
			return err
		}
		*got = append([]string{*trust}, pos...)
		return nil
	}
	return []Command{
		{Name: "verify", Summary: "verify a file", Run: run},
		{Name: "trust", Summary: "trust roots", Sub: []Command{{Name: "init", Summary: "make one", Run: run}}},
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		got      string
		stdout   string
		stderr   string
		wantVerb bool
	}{
		{name: "no command", args: nil, code: 2, stderr: "no command given"},
		{name: "unknown command", args: []string{"nope"}, code: 2, stderr: `unknown command "nope"`},
		{name: "bad flag", args: []string{"verify", "--bogus", "f"}, code: 2, stderr: "tool verify: flag provided but not defined"},
		{name: "missing arg", args: []string{"verify"}, code: 2, stderr: "tool verify: missing FILE"},
		{name: "command named once", args: []string{"verify"}, code: 2, stderr: "tool verify: missing FILE\nRun 'tool --help'"},
		{name: "extra arg", args: []string{"verify", "a", "b"}, code: 2, stderr: "too many arguments: b"},
		{name: "help", args: []string{"--help"}, code: 0, stdout: "Commands:"},
		{name: "command help", args: []string{"verify", "-h"}, code: 0, stdout: "Usage: tool verify [flags] FILE"},
		{name: "flags first", args: []string{"verify", "--trust", "t.json", "p.tsp"}, code: 0, got: "t.json p.tsp"},
		{name: "flags after", args: []string{"verify", "p.tsp", "--trust", "t.json", "-v"}, code: 0, got: "t.json p.tsp", wantVerb: true},
		{name: "double dash", args: []string{"verify", "--", "-odd-name"}, code: 0, got: " -odd-name"},
		{name: "nested", args: []string{"trust", "init", "x", "--trust=k"}, code: 0, got: "k x"},
		{name: "nested unknown", args: []string{"trust", "nope"}, code: 2, stderr: `unknown command "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			var verbose bool
			var stdout, stderr bytes.Buffer
			code := Run(t.Context(), "tool", "a test tool", testCommands(&got, &verbose), tc.args, IO{Stdout: &stdout, Stderr: &stderr})
			if code != tc.code {
				t.Fatalf("code = %d, want %d; stderr=%q", code, tc.code, stderr.String())
			}
			if tc.got != "" && strings.Join(got, " ") != tc.got {
				t.Errorf("parsed %q, want %q", strings.Join(got, " "), tc.got)
			}
			if strings.HasPrefix(stderr.String(), "tool: tool ") {
				t.Errorf("the program is named twice: %q", stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stdout=%q stderr=%q, want %q / %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
			if n := strings.Count(stdout.String(), "Usage:"); n > 1 {
				t.Errorf("usage printed %d times:\n%s", n, stdout.String())
			}
			if verbose != tc.wantVerb {
				t.Errorf("verbose = %v", verbose)
			}
		})
	}
}
