package esptest

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition/esp"
)

// Write creates dir/twinslot (the layout) if needed and writes files into it by name.
func Write(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	sub := filepath.Join(dir, esp.Subdir)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(sub, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Content describes every file of dir/twinslot as "name=SHA-256" lines in name order.
func Content(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, esp.Subdir))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, esp.Subdir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return Describe(files)
}

// Describe is what Content returns for a layout holding exactly files.
func Describe(files map[string][]byte) string {
	var out []string
	for _, n := range slices.Sorted(maps.Keys(files)) {
		out = append(out, fmt.Sprintf("%s=%x", n, sha256.Sum256(files[n])))
	}
	return strings.Join(out, "\n")
}
