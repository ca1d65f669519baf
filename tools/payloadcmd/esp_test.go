package payloadcmd_test

import (
	"bytes"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition/esp/esptest"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
)

// newESP makes an ESP directory with the layout and USR-A's kernel and initrd.
func newESP(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "boot")
	esptest.Write(t, dir, oldESP)
	return dir
}

var oldESP = map[string][]byte{"vmlinuz-a": []byte("kernel 1.0.0"), "initrd-a": []byte("initrd 1.0.0")}

func TestApplyESP(t *testing.T) {
	h := newHost(t)
	kernel, initrd := []byte("kernel 1.1.0"), bytes.Repeat([]byte("initrd 1.1.0 "), 4096)
	withKernel := filepath.Join(h.dir, "newer-kernel.img")
	if err := testimages.BuildUsr(t.Context(), withKernel, testimages.UsrOptions{Version: "1.1.0", Base: h.base, Change: 0.05, Kernel: kernel, Initrd: initrd}); err != nil {
		t.Fatal(err)
	}
	o := payloadtest.Options("1.1.0")
	o.SecurityVersion = 2
	pk := filepath.Join(h.dir, "kernel.tsp")
	payloadtest.BuildFile(t, withKernel, pk, o, h.key)

	t.Run("no layout at --esp", func(t *testing.T) {
		before := h.regions(t)
		r := run(t, "apply", "--trust", h.trust, "--disk", h.disk, "--esp", t.TempDir(), pk)
		if r.code != 2 || !strings.Contains(r.stderr, "twinslot is not a directory") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		if h.regions(t)["whole disk"] != before["whole disk"] {
			t.Fatal("the disk changed")
		}
	})
	t.Run("image without a kernel", func(t *testing.T) {
		dir := newESP(t)
		before, files := h.regions(t), esptest.Content(t, dir)
		r := run(t, "apply", "--trust", h.trust, "--disk", h.disk, "--esp", dir, h.payload)
		if r.code != 1 || !strings.Contains(r.stderr, "built without a kernel") || !strings.Contains(r.stderr, "USR-B is not made the next boot") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		after := h.regions(t)
		for _, k := range []string{"primary GPT", "backup GPT", "USR-A"} {
			if after[k] != before[k] {
				t.Errorf("%s changed", k)
			}
		}
		if got := esptest.Content(t, dir); got != files {
			t.Errorf("the ESP changed:\n%s", got)
		}
	})
	t.Run("copied before the flip", func(t *testing.T) {
		dir := newESP(t)
		r := mustRun(t, "apply", "--trust", h.trust, "--disk", h.disk, "--esp", dir, pk)
		if !strings.Contains(r.stdout, "vmlinuz-b and initrd-b") || !strings.Contains(r.stdout, "USR-B boots next") {
			t.Fatalf("stdout %s", r.stdout)
		}
		want := map[string][]byte{"vmlinuz-b": kernel, "initrd-b": initrd}
		maps.Copy(want, oldESP)
		if got := esptest.Content(t, dir); got != esptest.Describe(want) {
			t.Fatalf("ESP:\n%s\nwant\n%s", got, esptest.Describe(want))
		}
	})
}
