package qemuboot

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteInitramfs(t *testing.T) {
	var buf bytes.Buffer
	mods := []Module{{Name: "virtio_ring", Data: []byte("\x7fELF ring")}, {Name: "virtio_blk", Data: []byte("\x7fELF blk")}}
	if err := WriteInitramfs(&buf, []byte("\x7fELF init"), mods); err != nil {
		t.Fatal(err)
	}
	// Names appear in the archive in this order (each NUL-terminated after its header).
	want := []string{"dev", "dev/console", "proc", "sys", "usr", "init", "lib", "lib/modules",
		"lib/modules/00-virtio_ring.ko", "lib/modules/01-virtio_blk.ko", "TRAILER!!!"}
	rest := buf.Bytes()
	for _, n := range want {
		i := bytes.Index(rest, []byte(n+"\x00"))
		if i < 0 {
			t.Fatalf("%q missing (or out of order) in the initramfs", n)
		}
		rest = rest[i+len(n):]
	}

	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed: the listing cross-check is skipped")
	}
	cmd := exec.CommandContext(t.Context(), cpio, "-t", "-v", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"crw-------", "-rwxr-xr-x"} {
		if !strings.Contains(string(out), line) {
			t.Errorf("cpio -tv lacks %q:\n%s", line, out)
		}
	}
}

func TestWriteInitramfsBadModule(t *testing.T) {
	for _, name := range []string{"", "../x", "a\x00b"} {
		if err := WriteInitramfs(&bytes.Buffer{}, []byte("init"), []Module{{Name: name, Data: []byte("x")}}); err == nil {
			t.Errorf("module name %q accepted", name)
		}
	}
}

// TestBuildInit compiles the real init: static, for linux/amd64.
func TestBuildInit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped with -short")
	}
	out := filepath.Join(t.TempDir(), "init")
	if err := BuildInit(t.Context(), "", out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF\x02")) || bytes.Contains(b, []byte("ld-linux")) {
		t.Fatalf("init is not a static 64-bit ELF (interpreter present or wrong magic)")
	}
}
