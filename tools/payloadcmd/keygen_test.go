package payloadcmd_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/tools/payloadcmd"
)

// TestPlaceNoReplace: keygen's placements refuse whatever exists at the destination (a file, a
// dangling symbolic link) with fs.ErrExist, leave it byte-identical and leave the source for the
// caller; into an absent destination they move the source.
func TestPlaceNoReplace(t *testing.T) {
	places := []struct {
		name  string
		place func(src, dst string) error
	}{
		{"renameat2 or link", payloadcmd.PlaceNoReplace},
		{"link", payloadcmd.LinkNoReplace},
	}
	for _, p := range places {
		t.Run(p.name, func(t *testing.T) {
			t.Run("existing file", func(t *testing.T) {
				dir := t.TempDir()
				src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
				writeFile(t, src, "new key")
				writeFile(t, dst, "someone else's key")
				if err := p.place(src, dst); !errors.Is(err, fs.ErrExist) {
					t.Fatalf("place over an existing file = %v, want fs.ErrExist", err)
				}
				if b, _ := os.ReadFile(dst); string(b) != "someone else's key" {
					t.Fatalf("destination after the refusal: %q", b)
				}
				if b, _ := os.ReadFile(src); string(b) != "new key" {
					t.Fatalf("source after the refusal: %q", b)
				}
			})
			t.Run("dangling symlink", func(t *testing.T) {
				dir := t.TempDir()
				src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
				writeFile(t, src, "new key")
				if err := os.Symlink(filepath.Join(dir, "nowhere"), dst); err != nil {
					t.Fatal(err)
				}
				if err := p.place(src, dst); !errors.Is(err, fs.ErrExist) {
					t.Fatalf("place over a dangling symlink = %v, want fs.ErrExist", err)
				}
				if target, err := os.Readlink(dst); err != nil || target != filepath.Join(dir, "nowhere") {
					t.Fatalf("symlink after the refusal: %q, %v", target, err)
				}
				if _, err := os.Lstat(filepath.Join(dir, "nowhere")); err == nil {
					t.Fatal("placed through the symlink")
				}
			})
			t.Run("absent", func(t *testing.T) {
				dir := t.TempDir()
				src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
				writeFile(t, src, "new key")
				if err := p.place(src, dst); err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(dst); string(b) != "new key" {
					t.Fatalf("destination: %q", b)
				}
				if ents, _ := os.ReadDir(dir); len(ents) != 1 {
					t.Fatalf("files after placing: %v", ents)
				}
			})
		})
	}
}

// TestKeygenRefusesExisting: keygen without --force refuses when NAME.key or NAME.pub exists,
// names it, says what to do, and writes nothing.
func TestKeygenRefusesExisting(t *testing.T) {
	for _, ext := range []string{".pub", ".key"} {
		t.Run(ext+" exists", func(t *testing.T) {
			dir := t.TempDir()
			name := filepath.Join(dir, "k")
			writeFile(t, name+ext, "existing\n")
			r := run(t, "keygen", "-o", name)
			assertExistsRefused(t, r, name+ext)
			assertOnly(t, dir, name+ext, "existing\n")
		})
	}
}

// TestKeygenRace: a key file another process creates after keygen checked its paths is refused,
// not replaced, and keygen leaves nothing of its own behind: when NAME.key appears, the NAME.pub
// keygen had already placed is removed again.
func TestKeygenRace(t *testing.T) {
	for _, ext := range []string{".key", ".pub"} {
		t.Run(ext+" appears", func(t *testing.T) {
			dir := t.TempDir()
			name := filepath.Join(dir, "k")
			env := payloadcmd.Env{Now: time.Now}
			payloadcmd.AfterKeygenCheck(&env, func() { writeFile(t, name+ext, "the other process's key\n") })
			var out, errb bytes.Buffer
			code := env.Main(t.Context(), []string{"keygen", "-o", name}, nil, &out, &errb)
			assertExistsRefused(t, result{code, out.String(), errb.String()}, name+ext)
			assertOnly(t, dir, name+ext, "the other process's key\n")
		})
	}
}

func assertExistsRefused(t *testing.T, r result, path string) {
	t.Helper()
	if r.code != 1 || !strings.Contains(r.stderr, path+" exists") || !strings.Contains(r.stderr, "--force") || !strings.Contains(r.stderr, "move it") {
		t.Fatalf("keygen with %s existing: exit %d, stderr %q; want exit 1 naming it, --force and moving it", path, r.code, r.stderr)
	}
}

// assertOnly fails unless path is the only file in dir and holds content.
func assertOnly(t *testing.T, dir, path, content string) {
	t.Helper()
	if b, err := os.ReadFile(path); err != nil || string(b) != content {
		t.Fatalf("%s after the refusal: %q, %v; want %q", path, b, err, content)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files after the refusal: %v; want only %s", ents, filepath.Base(path))
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
