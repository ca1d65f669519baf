package osimage

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
)

// e2eEnv skips unless the heavy image build can run here, and returns the cache root.
func e2eEnv(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the OS image build is heavy")
	}
	if os.Getenv("TWINSLOT_E2E") == "" {
		t.Skip("set TWINSLOT_E2E=1 to build a Debian OS image (mmdebstrap, minutes on the first run)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the OS image build unpacks a Debian tree with its owners: run as root")
	}
	for _, tool := range append(Tools(false), "mmdebstrap", "debugfs", "mtype", "go") {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install mmdebstrap e2fsprogs dosfstools mtools)", tool)
		}
	}
	if c := os.Getenv("TWINSLOT_CACHE"); c != "" {
		return c
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skipf("no cache root: set TWINSLOT_CACHE (%v)", err)
	}
	return filepath.Join(home, ".cache", "twinslot")
}

// buildBinaries builds the programs an image carries into a temporary directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	pkgs := map[string]string{"updated": "updated/cmd/updated", "updatectl": "updated/cmd/updatectl",
		"locksmithd": "locksmith/cmd/locksmithd", "locksmithctl": "locksmith/cmd/locksmithctl"}
	for name, pkg := range pkgs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./"+pkg)
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return bin
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out)
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

// TestBuildE2E builds version 1.0.0 with a disk, checks the disk and its filesystems from
// outside, rebuilds 1.0.0 (byte-identical usr.img) and builds 1.0.1 and a broken 1.0.2,
// which must share at least 98% of their 64 KiB blocks with 1.0.0 (99.9% measured).
func TestBuildE2E(t *testing.T) {
	cache := e2eEnv(t)
	bin := buildBinaries(t)
	dir := t.TempDir()
	grub := filepath.Join(dir, "BOOTX64.EFI")
	if err := os.WriteFile(grub, []byte("MZ stand-in for GRUB: this test does not boot"), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay")
	if err := os.MkdirAll(filepath.Join(overlay, "etc/twinslot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(overlay, "etc/twinslot/update.conf"), []byte("GROUP=e2e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	trust := filepath.Join(dir, "trust.json")
	if err := os.WriteFile(trust, []byte(`{"version":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := Options{Bin: bin, GrubEFI: grub, Cache: cache, Trust: trust, Log: testWriter{t}}

	o := base
	o.OutDir, o.Version, o.RootOverlay = filepath.Join(dir, "v1"), "1.0.0", overlay
	v1, err := Build(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1.0.0: bootstrap %v (cached %v), assembly %v; usr.img %d MiB, kernel %s", v1.BootstrapTime, v1.Cached, v1.AssembleTime, v1.UsrSize>>20, v1.KernelRelease)

	t.Run("gpt", func(t *testing.T) {
		d, err := partition.Open(v1.Disk)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		slots, err := d.Slots()
		if err != nil {
			t.Fatal(err)
		}
		if len(slots) != 2 || slots[0].Label != "USR-A" || slots[0].Attr != 0x0101000000000000 || slots[1].Label != "USR-B" || slots[1].Attr.Priority() != 0 {
			t.Fatalf("slots %v", slots)
		}
		if _, err := exec.LookPath("sgdisk"); err == nil {
			out, err := exec.Command("sgdisk", "-v", v1.Disk).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "No problems found") {
				t.Errorf("sgdisk -v: %v\n%s", err, out)
			}
			p := output(t, "sgdisk", "-p", v1.Disk)
			for _, want := range []string{"EFI-SYSTEM", "USR-A", "USR-B", "ROOT"} {
				if !strings.Contains(p, want) {
					t.Errorf("sgdisk -p lacks %s:\n%s", want, p)
				}
			}
		}
	})

	t.Run("esp", func(t *testing.T) {
		img := v1.Disk + "@@" + strconv.FormatInt(testimages.MiB, 10)
		if ls := output(t, "mdir", "-i", img, "-b", "::/"); !strings.Contains(ls, "::/EFI/") || !strings.Contains(ls, "::/twinslot/") {
			t.Errorf("ESP root:\n%s", ls)
		}
		if cfg := output(t, "mtype", "-i", img, "::/EFI/BOOT/grub.cfg"); cfg != GrubConfig() {
			t.Errorf("grub.cfg on the ESP:\n%s", cfg)
		}
		for _, f := range []struct{ esp, want string }{{"/EFI/BOOT/BOOTX64.EFI", grub}, {"/twinslot/vmlinuz-a", v1.Kernel}, {"/twinslot/initrd-a", v1.Initrd}} {
			got := filepath.Join(t.TempDir(), "f")
			output(t, "mcopy", "-i", img, "::"+f.esp, got)
			if !sameFile(t, got, f.want) {
				t.Errorf("ESP:%s differs from %s", f.esp, f.want)
			}
		}
	})

	t.Run("usr", func(t *testing.T) {
		rel, err := testimages.ReadReleaseFile(v1.Usr)
		if err != nil {
			t.Fatal(err)
		}
		if rel.ID != "twinslot" || rel.Version != "1.0.0" || rel.Board != testimages.DefaultBoard || rel.Broken {
			t.Errorf("release %+v", rel)
		}
		cat := func(p string) string { return output(t, "debugfs", "-R", "cat "+p, v1.Usr) }
		for p, want := range map[string]string{
			"/lib/os-release":                                "BUILD_ID=1\n",
			"/lib/systemd/system/updated.service":            "ExecStart=/usr/bin/updated\n",
			"/lib/systemd/system/locksmithd.service":         "ExecStart=/usr/bin/locksmithd\n",
			"/share/dbus-1/system.d/com.coreos.update1.conf": `<policy group="twinslot">`,
			"/lib/sysusers.d/twinslot.conf":                  "g twinslot",
			"/share/twinslot/trust.json":                     `{"version":1}`,
			"/lib/systemd/system/" + brokenUnit:              "ConditionPathExists=/usr/lib/twinslot/broken\n",
		} {
			if got := cat(p); !strings.Contains(got, want) {
				t.Errorf("%s lacks %q:\n%s", p, want, got)
			}
		}
		wants := output(t, "debugfs", "-R", "ls -l /"+wantsDir, v1.Usr)
		for _, u := range []string{"updated.service", "locksmithd.service", brokenUnit} {
			if !strings.Contains(wants, u) {
				t.Errorf("%s not enabled:\n%s", u, wants)
			}
		}
		for p, want := range map[string]string{"/boot/vmlinuz": v1.Kernel, "/boot/initrd.img": v1.Initrd, "/bin/updated": filepath.Join(bin, "updated")} {
			got := filepath.Join(t.TempDir(), "f")
			output(t, "debugfs", "-R", "dump "+p+" "+got, v1.Usr)
			if !sameFile(t, got, want) {
				t.Errorf("usr.img:%s differs from %s", p, want)
			}
		}
		if out, err := exec.Command("e2fsck", "-fn", v1.Usr).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn usr.img: %v\n%s", err, out)
		}
	})

	t.Run("root", func(t *testing.T) {
		parts, err := DiskLayout(DefaultDiskSize, DefaultSlotSize)
		if err != nil {
			t.Fatal(err)
		}
		// debugfs reads a filesystem at an offset through the unix io manager's ?offset=.
		root := v1.Disk + "?offset=" + strconv.FormatInt(parts[3].Start, 10)
		cat := func(p string) string { return output(t, "debugfs", "-R", "cat "+p, root) }
		if got := cat("/etc/fstab"); !strings.Contains(got, "/boot vfat umask=0077") {
			t.Errorf("fstab:\n%s", got)
		}
		if got := cat("/etc/twinslot/update.conf"); got != "GROUP=e2e\n" {
			t.Errorf("overlay update.conf = %q", got)
		}
		if got := output(t, "debugfs", "-R", "stat /etc/machine-id", root); !strings.Contains(got, "Size: 0") {
			t.Errorf("machine-id:\n%s", got)
		}
		for _, dir := range []string{"/usr", "/boot", "/etc/apt/sources.list.d"} {
			ls := output(t, "debugfs", "-R", "ls "+dir, root)
			if len(strings.Fields(ls)) > 6 { // ".", ".." with their inode and length
				t.Errorf("%s is not empty:\n%s", dir, ls)
			}
		}
		if got := output(t, "debugfs", "-R", "stat /bin", root); !strings.Contains(got, `Fast link dest: "usr/bin"`) {
			t.Errorf("/bin:\n%s", got)
		}
	})

	// The same version again, without the disk: the same bytes.
	o = base
	o.OutDir, o.Version, o.RootOverlay = filepath.Join(dir, "v1again"), "1.0.0", overlay
	again, err := Build(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached {
		t.Error("the second build bootstrapped again")
	}
	if !sameFile(t, v1.Usr, again.Usr) {
		t.Error("two builds of 1.0.0 give different usr.img")
	}
	t.Logf("1.0.0 again: assembly %v", again.AssembleTime)

	// A new version of the same tree, and a broken one: both share most of their blocks.
	for _, next := range []struct {
		version string
		broken  bool
	}{{"1.0.1", false}, {"1.0.2", true}} {
		o = base
		o.OutDir, o.Version, o.UsrOnly, o.Broken = filepath.Join(dir, next.version), next.version, true, next.broken
		v, err := Build(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		if rel, err := testimages.ReadReleaseFile(v.Usr); err != nil || rel.Version != next.version || rel.Broken != next.broken {
			t.Errorf("%s: release %+v, %v", next.version, rel, err)
		}
		if _, err := os.Stat(filepath.Join(o.OutDir, "disk.img")); v.Disk != "" || !os.IsNotExist(err) {
			t.Errorf("--usr-only made a disk (%q, %v)", v.Disk, err)
		}
		total, anywhere, inPlace := blockStats(t, v1.Usr, v.Usr, 64<<10)
		t.Logf("%s (broken %v) vs 1.0.0, 64 KiB blocks that are not all zero: %d; %d (%.1f%%) found in 1.0.0, %d (%.1f%%) at the same offset",
			next.version, next.broken, total, anywhere, 100*float64(anywhere)/float64(total), inPlace, 100*float64(inPlace)/float64(total))
		if anywhere*100 < total*98 {
			t.Errorf("%s shares only %d of its %d 64 KiB blocks with 1.0.0", next.version, anywhere, total)
		}
	}
}

// blockStats compares the size-byte blocks of image b with image a: of b's blocks that are
// not all zero (total), how many have their content somewhere in a (anywhere) and how many
// sit at the same offset in a (inPlace).
func blockStats(t *testing.T, a, b string, size int) (total, anywhere, inPlace int) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	have := map[[32]byte]bool{}
	for off := 0; off+size <= len(x); off += size {
		have[sha256.Sum256(x[off:off+size])] = true
	}
	zero := make([]byte, size)
	for off := 0; off+size <= len(y); off += size {
		blk := y[off : off+size]
		if bytes.Equal(blk, zero) {
			continue
		}
		total++
		if have[sha256.Sum256(blk)] {
			anywhere++
		}
		if off+size <= len(x) && bytes.Equal(blk, x[off:off+size]) {
			inPlace++
		}
	}
	return total, anywhere, inPlace
}

// testWriter sends build output to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	if s := strings.TrimSpace(string(p)); s != "" {
		w.t.Log(s)
	}
	return len(p), nil
}
