package testimages

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
)

func hashFile(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func buildUsrT(t testing.TB, p string, o UsrOptions) {
	t.Helper()
	if err := BuildUsr(t.Context(), p, o); err != nil {
		t.Fatal(err)
	}
}

// treeOf reads every regular file of an image: path → content hash.
func treeOf(t testing.TB, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := ext4.Read(file.New(f, true), st.Size(), 0, 512)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		entries, err := fsys.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := path.Join(dir, e.Name())
			if e.IsDir() {
				walk(p)
				continue
			}
			b, err := fsys.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			out[p] = hex.EncodeToString(h[:8])
		}
	}
	walk(".")
	return out
}

// e2fsck checks an ext4 filesystem with e2fsck -fn when it is installed.
func e2fsck(t testing.TB, p string) {
	t.Helper()
	bin, err := exec.LookPath("e2fsck")
	if err != nil {
		t.Log("e2fsck not installed (apt-get install e2fsprogs); filesystem check skipped")
		return
	}
	out, err := exec.CommandContext(t.Context(), bin, "-fn", p).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", p, err, out)
	}
	if !strings.Contains(string(out), "Pass 5") {
		t.Fatalf("e2fsck output:\n%s", out)
	}
}
