package gptpriotest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAttributes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want uint64
	}{
		{"P=2 T=1", false, 0},
		{"P=16 T=0 S=0", false, 0},
		{"P=1 T=0 S=2", false, 0},
		{"T=1 P=2 S=0", false, 0},
		{"P=1 T=0 S=0 other=0x0001000000000000", false, 0}, // a gptprio bit in other=
		{"P=1 T=0 S=0 other=0x1", false, 0},                // not the canonical spelling
		{"P=0 T=0 S=0", true, 0},
		{"P=15 T=15 S=1", true, 0x01ff000000000000},
		{"P=2 T=1 S=0 other=0xe000000000000004", true, 0xe012000000000004},
	} {
		a, err := ParseAttributes(tc.in)
		if (err == nil) != tc.ok || (tc.ok && uint64(a) != tc.want) {
			t.Errorf("ParseAttributes(%q) = %#x, %v; want ok=%v %#x", tc.in, uint64(a), err, tc.ok, tc.want)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	good := `{"name": "a", "slots": ["P=1 T=0 S=1", "P=0 T=0 S=0"], "want": {"boot": "USR-A", "slots": ["P=1 T=0 S=1", "P=0 T=0 S=0"]}}`
	for _, tc := range []struct{ name, json, want string }{
		{"wrong version", `{"version": 2, "cases": [` + good + `]}`, "version 2"},
		{"no cases", `{"version": 1, "cases": []}`, "no cases"},
		{"unknown field", `{"version": 1, "cases": [` + good + `], "extra": 1}`, "unknown field"},
		{"duplicate name", `{"version": 1, "cases": [` + good + `,` + good + `]}`, "twice"},
		{"bad name", `{"version": 1, "cases": [` + strings.Replace(good, `"a"`, `"A B"`, 1) + `]}`, "case name"},
		{"one slot", `{"version": 1, "cases": [{"name": "a", "slots": ["P=1 T=0 S=1"], "want": {"slots": ["P=1 T=0 S=1"]}}]}`, "want 2 or 3"},
		{"boot not a slot", `{"version": 1, "cases": [` + strings.Replace(good, `"USR-A"`, `"USR-C"`, 1) + `]}`, "not one of its slots"},
		{"unknown damage", `{"version": 1, "cases": [` + strings.Replace(good, `"want"`, `"damage": "some", "want"`, 1) + `]}`, "unknown damage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cases.json")
			if err := os.WriteFile(p, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
