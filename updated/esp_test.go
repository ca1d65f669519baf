package updated_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition/esp"
	"github.com/twinslot/twinslot/partition/esp/esptest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated"
)

// Hosts that boot the kernel of each slot from the ESP (partition/esp): the slots hold real
// ext4 /usr images with boot/vmlinuz and boot/initrd.img, and h.esp/twinslot holds the
// running slot's pair as the image builder left it.

func blob(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed, 'e', 's', 'p'}).Read(b)
	return b
}

var (
	kernelA, initrdA = blob(200<<10, 1), blob(100<<10, 2)
	kernelB, initrdB = blob(300<<10+11, 3), blob(150<<10, 4)
)

// usrImages caches built images by their options: BuildUsr is a pure function of them, and
// building under the race detector takes seconds.
var usrImages sync.Map

// usrImage builds an ext4 /usr image of version with kernel and initrd (nil: none).
func usrImage(t *testing.T, version string, kernel, initrd []byte, broken bool) []byte {
	t.Helper()
	key := fmt.Sprintf("%s %x %x %v", version, sha256.Sum256(kernel), sha256.Sum256(initrd), broken)
	if b, ok := usrImages.Load(key); ok {
		return b.([]byte)
	}
	p := filepath.Join(t.TempDir(), "usr-"+version+".img")
	o := testimages.UsrOptions{Version: version, Board: board, Size: testimages.MinUsrSize, Kernel: kernel, Initrd: initrd, Broken: broken}
	if err := testimages.BuildUsr(t.Context(), p, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	usrImages.Store(key, b)
	return b
}

// espScenario is a host on 1.0.0 (USR-A, its kernel on the ESP as vmlinuz-a) and a server
// offering 2.0.0 built from newImg. prepare, when set, runs before the ESP is populated (to
// mount something there).
func espScenario(t *testing.T, newImg []byte, prepare func(h *host)) (*host, *omahaServer) {
	t.Helper()
	h := newHostWith(t, testimages.MinUsrSize, usrImage(t, "1.0.0", kernelA, initrdA, false))
	if slot, v := h.running(); slot != "USR-A" || v != "1.0.0" {
		t.Fatalf("booted %s %s", slot, v)
	}
	if err := os.MkdirAll(h.esp, 0o755); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(h)
	}
	esptest.Write(t, h.esp, map[string][]byte{"vmlinuz-a": kernelA, "initrd-a": initrdA})
	rel := newRelease(t, 0)
	rel.install(t, h)
	srv := newOmahaServer(t)
	p := rel.buildImage(t, t.TempDir(), "2.0.0", newImg)
	srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", p })
	h.writeConf(srv.URL())
	return h, srv
}

// gptBytes returns the primary (LBA 0–33) and backup (last 33 LBAs) GPT areas of the disk.
func gptBytes(t *testing.T, disk string) []byte {
	t.Helper()
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	return append(bytes.Clone(b[:34*512]), b[len(b)-33*512:]...)
}

func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the ESP")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "twinslot-esp", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
}

// TestESPInstallFails: when the kernel cannot go to the ESP, the agent reports 3/0/1005 and
// flips nothing: the GPT bytes, the running slot's ESP files and the other files are as before.
func TestESPInstallFails(t *testing.T) {
	withKernel := func(t *testing.T) []byte { return usrImage(t, "2.0.0", kernelB, initrdB, false) }
	for _, tc := range []struct {
		name    string
		img     func(t *testing.T) []byte
		prepare func(h *host)
		after   func(t *testing.T, h *host) // once the ESP is populated
		want    string
	}{
		{name: "no kernel in the image", img: func(t *testing.T) []byte { return usrImage(t, "2.0.0", nil, nil, false) }, want: "built without a kernel"},
		{name: "ESP full", img: withKernel, prepare: func(h *host) { mountTmpfs(h.t, h.esp, 640<<10) }, want: "grow the ESP"},
		{name: "ESP read-only", img: withKernel, prepare: func(h *host) { mountTmpfs(h.t, h.esp, 4<<20) },
			after: func(t *testing.T, h *host) {
				if out, err := exec.Command("mount", "-o", "remount,ro", h.esp).CombinedOutput(); err != nil {
					t.Skipf("remount read-only: %v: %s", err, out)
				}
			}, want: "mounted read-write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := espScenario(t, tc.img(t), tc.prepare)
			if tc.after != nil {
				tc.after(t, h)
			}
			gpt, files := gptBytes(t, h.disk), esptest.Content(t, h.esp)
			rec := failOnce(t, h, srv)
			if f := rec.LastError; f == nil || f.Code != updated.CodeKernelInstall || f.Step != updated.Finalizing || !strings.Contains(f.Message, tc.want) {
				t.Fatalf("last error %+v, want code %d at FINALIZING saying %q", f, updated.CodeKernelInstall, tc.want)
			}
			if !bytes.Equal(gptBytes(t, h.disk), gpt) {
				t.Fatal("the GPT changed")
			}
			if got := esptest.Content(t, h.esp); got != files {
				t.Fatalf("the ESP changed:\n%s\nwas\n%s", got, files)
			}
			if log := srv.log(); log[len(log)-1] != "event 3/0/1005" {
				t.Fatalf("server saw %v, want it to end with 3/0/1005", log)
			}
			h.boot()
			if slot, v := h.running(); slot != "USR-A" || v != "1.0.0" {
				t.Fatalf("booted %s %s after the failure, want USR-A 1.0.0", slot, v)
			}
		})
	}
}

// TestESPInstall: the new slot's kernel and initrd land byte for byte as vmlinuz-b/initrd-b
// before the flip, after a crash that left the ESP half-written as well; the running slot's
// files never change, neither through the commit.
func TestESPInstall(t *testing.T) {
	h, srv := espScenario(t, usrImage(t, "2.0.0", kernelB, initrdB, false), nil)
	// What a power cut between the kernel's and the initrd's rename leaves behind.
	esptest.Write(t, h.esp, map[string][]byte{"vmlinuz-b": kernelB, "initrd-b": []byte("an old initrd"), ".initrd-b.tmp": initrdB[:1000]})

	toNeedReboot(t, h, srv)
	want := esptest.Describe(map[string][]byte{"vmlinuz-a": kernelA, "initrd-a": initrdA, "vmlinuz-b": kernelB, "initrd-b": initrdB})
	if got := esptest.Content(t, h.esp); got != want {
		t.Fatalf("ESP after the install:\n%s\nwant\n%s", got, want)
	}
	if b := h.slots()["USR-B"].Attr; b.Priority() != 2 || b.Tries() != 1 {
		t.Fatalf("USR-B after install: %v", b)
	}
	h.boot()
	if slot, v := h.running(); slot != "USR-B" || v != "2.0.0" {
		t.Fatalf("booted %s %s, want USR-B 2.0.0", slot, v)
	}
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "the commit", func(rec updated.Record) bool {
		return rec.Boot.State == updated.BootCommitted && rec.State == updated.Idle
	})
	r.stop(t)
	if got := esptest.Content(t, h.esp); got != want {
		t.Fatalf("the commit changed the ESP:\n%s\nwant\n%s", got, want)
	}
}

// TestESPRollbackLeavesESP: the health gate's mark-bad and the rollback boot use the GPT
// only; the ESP is exactly as the install left it.
func TestESPRollbackLeavesESP(t *testing.T) {
	h, srv := espScenario(t, usrImage(t, "2.0.0", kernelB, initrdB, true), nil)
	toNeedReboot(t, h, srv)
	files := esptest.Content(t, h.esp)
	mtimes := func() string {
		var out []string
		for _, n := range []string{"", "vmlinuz-a", "initrd-a", "vmlinuz-b", "initrd-b"} {
			st, err := os.Stat(filepath.Join(h.esp, esp.Subdir, n))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st.ModTime().String())
		}
		return strings.Join(out, ",")
	}
	before := mtimes()
	h.boot()
	r := h.start(srv.URL(), fast, 0)
	select {
	case <-h.rebootCh:
	case <-time.After(2 * time.Minute):
		t.Fatal("no reboot after the failed health gate")
	}
	r.stop(t)
	h.boot()
	if slot, v := h.running(); slot != "USR-A" || v != "1.0.0" {
		t.Fatalf("rolled back to %s %s, want USR-A 1.0.0", slot, v)
	}
	r = h.start(srv.URL(), fast, 0)
	waitState(t, r, "the rollback reported", func(rec updated.Record) bool { return rec.State == updated.Idle && rec.Rollback == nil && rec.Seq > 10 })
	r.stop(t)
	if got := esptest.Content(t, h.esp); got != files || mtimes() != before {
		t.Fatalf("the rollback wrote to the ESP:\n%s\nwas\n%s", got, files)
	}
}
