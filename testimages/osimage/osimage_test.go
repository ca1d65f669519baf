package osimage

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	locksmithdist "github.com/twinslot/twinslot/locksmith/dist"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/osrelease"
	"github.com/twinslot/twinslot/testimages"
	updateddist "github.com/twinslot/twinslot/updated/dist"
)

func TestGrubConfig(t *testing.T) {
	cfg := GrubConfig()
	for _, want := range []string{
		"gptprio.next -d usr_dev -u usr_uuid\n",
		`if [ "$usr_uuid" = "7130c94a-213a-4e5a-8e26-6cce9662f132" ]; then`,
		`elif [ "$usr_uuid" = "e03dd35c-7c2d-4a47-b3fe-27f15780a57c" ]; then`,
		"linux /twinslot/vmlinuz-$slot root=PARTUUID=b1a7c0de-0009-4000-8000-000000000009 mount.usr=PARTUUID=$usr_uuid mount.usrfstype=ext4 ",
		"initrd /twinslot/initrd-$slot\n",
		"console=ttyS0,115200", "panic=10", " ro ", "reboot\n", "set timeout=0\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("grub.cfg lacks %q:\n%s", want, cfg)
		}
	}
	// The GUIDs GRUB compares with are the ones on the disk, lowercase as gptprio.next sets them.
	parts, err := DiskLayout(DefaultDiskSize, DefaultSlotSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts[1:3] {
		if !strings.Contains(cfg, strings.ToLower(p.GUID)) {
			t.Errorf("grub.cfg does not name %s (%s)", p.Label, p.GUID)
		}
	}
	if strings.Count(cfg, "\nif [") != 1 || strings.Count(cfg, "fi\n") != 1 {
		t.Errorf("unbalanced if/fi:\n%s", cfg)
	}
}

func TestOSRelease(t *testing.T) {
	text := OSRelease("1.2.3", "42", "amd64-usr")
	rel, err := osrelease.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if rel.ID != "twinslot" || rel.Version != "1.2.3" || rel.Board != "amd64-usr" {
		t.Fatalf("parsed %+v from\n%s", rel, text)
	}
	for _, want := range []string{"VERSION_ID=1.2.3\n", "BUILD_ID=42\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("os-release lacks %q", want)
		}
	}
}

func TestDiskLayout(t *testing.T) {
	for _, tc := range []struct {
		name       string
		disk, slot int64
		err        string
	}{
		{name: "slot not MiB aligned", disk: DefaultDiskSize, slot: DefaultSlotSize + 512, err: "multiples of 1 MiB"},
		{name: "disk not MiB aligned", disk: DefaultDiskSize + 4096, slot: DefaultSlotSize, err: "multiples of 1 MiB"},
		{name: "slot too small", disk: DefaultDiskSize, slot: 32 * testimages.MiB, err: "below the minimum"},
		{name: "no room for ROOT", disk: 2 * testimages.GiB, slot: DefaultSlotSize, err: "larger --disk-size"},
		{name: "default", disk: DefaultDiskSize, slot: DefaultSlotSize},
		{name: "small", disk: 1100 * testimages.MiB, slot: 256 * testimages.MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := DiskLayout(tc.disk, tc.slot)
			if tc.err != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want a UsageError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []struct {
				n     int
				label string
				size  int64
			}{{1, "EFI-SYSTEM", ESPSize}, {3, "USR-A", tc.slot}, {4, "USR-B", tc.slot}, {9, "ROOT", tc.disk - 2*testimages.MiB - ESPSize - 2*tc.slot}}
			if len(parts) != len(want) {
				t.Fatalf("%d partitions", len(parts))
			}
			end := int64(testimages.MiB)
			for i, w := range want {
				p := parts[i]
				if p.Number != w.n || p.Label != w.label || p.Size != w.size || p.Start != end || p.Start%testimages.MiB != 0 {
					t.Errorf("partition %d = %+v; want #%d %s of %d at %d", i, p, w.n, w.label, w.size, end)
				}
				end = p.Start + p.Size
			}
			if a, b := parts[1].Attr, parts[2].Attr; a != 0x0101000000000000 || b != 0 || parts[1].Type != partition.TypeUSR || parts[2].Type != partition.TypeUSR {
				t.Errorf("USR-A %v %s, USR-B %v %s", a, parts[1].Type, b, parts[2].Type)
			}
		})
	}
}

func TestFixUnits(t *testing.T) {
	for _, u := range []struct {
		fsys interface{ ReadFile(string) ([]byte, error) }
		name string
		bin  string
	}{{updateddist.FS, "updated.service", "updated"}, {locksmithdist.FS, "locksmithd.service", "locksmithd"}} {
		text, err := u.fsys.ReadFile(u.name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fixUnit(string(text), u.bin)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "\nExecStart=/usr/bin/"+u.bin+"\n") {
			t.Errorf("%s: no ExecStart=/usr/bin/%s:\n%s", u.name, u.bin, got)
		}
		if strings.Count(got, "\n") != strings.Count(string(text), "\n") {
			t.Errorf("%s: line count changed", u.name)
		}
	}
	if _, err := fixUnit("[Service]\nExecStart=/bin/true\n", "updated"); err == nil {
		t.Error("a unit without the binary's ExecStart was accepted")
	}
	policy, err := updateddist.FS.ReadFile("com.coreos.update1.conf")
	if err != nil {
		t.Fatal(err)
	}
	got, err := fixPolicy(string(policy))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, `user="core"`) || !strings.Contains(got, `<policy group="twinslot">`) || strings.Count(got, "<policy ") != 3 {
		t.Errorf("policy:\n%s", got)
	}
	if _, err := fixPolicy("<busconfig/>"); err == nil {
		t.Error("a policy without the core section was accepted")
	}
}

// newcEntries decodes the names and contents of a newc archive.
func newcEntries(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for off := 0; ; {
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at %d", off)
		}
		field := func(i int) int {
			n, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
		size, nameLen := field(6), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		off = (off + 110 + nameLen + 3) &^ 3
		data := string(b[off : off+size])
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = data
	}
}

func TestMarkedInitrd(t *testing.T) {
	for _, baseLen := range []int{0, 1, 2, 3, 4, 1001} {
		base := filepath.Join(t.TempDir(), "initrd")
		var gz bytes.Buffer
		w := gzip.NewWriter(&gz)
		w.Write(bytes.Repeat([]byte{'x'}, baseLen))
		w.Close()
		if err := os.WriteFile(base, gz.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := markedInitrd(base, "1.0.1-7")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(got, gz.Bytes()) {
			t.Fatal("the base initrd is not kept as it is")
		}
		// The kernel skips zero bytes after the compressed part and wants the cpio header
		// 4-byte aligned.
		start := (gz.Len() + 3) &^ 3
		if !bytes.Equal(got[gz.Len():start], make([]byte, start-gz.Len())) {
			t.Fatalf("padding is not zero: %q", got[gz.Len():start])
		}
		entries := newcEntries(t, got[start:])
		if entries[markerInInitrd] != "1.0.1-7\n" {
			t.Errorf("marker = %q", entries[markerInInitrd])
		}
		unit := entries["etc/systemd/system/"+markerUnit]
		if !strings.Contains(unit, MarkerPath) || !strings.Contains(unit, "WantedBy=initrd.target") {
			t.Errorf("unit:\n%s", unit)
		}
		if l := entries["etc/systemd/system/initrd.target.wants/"+markerUnit]; l != "../"+markerUnit {
			t.Errorf("wants link → %q", l)
		}
	}
	if _, err := markedInitrd(filepath.Join(t.TempDir(), "missing"), "m"); err == nil {
		t.Error("a missing base initrd was accepted")
	}
}

func TestFiller(t *testing.T) {
	a, a2, b := Filler("1.0.0", "amd64-usr", 1<<20), Filler("1.0.0", "amd64-usr", 1<<20), Filler("1.0.1", "amd64-usr", 1<<20)
	if !bytes.Equal(a, a2) {
		t.Error("two fillers of one version differ")
	}
	if bytes.Equal(a[:4096], b[:4096]) {
		t.Error("fillers of two versions are equal")
	}
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write(a)
	w.Close()
	if z.Len() < len(a) {
		t.Errorf("filler compresses from %d to %d bytes", len(a), z.Len())
	}
}

func TestUsrImageSize(t *testing.T) {
	small := UsrImageSize(1000, 100)
	if small%(64*testimages.MiB) != 0 || small < 64*testimages.MiB {
		t.Errorf("size %d", small)
	}
	// Debian's /usr: ~80k blocks, ~15k inodes.
	if got := UsrImageSize(80000, 15000); got < 80000*4096*5/4 || got > 512*testimages.MiB {
		t.Errorf("size for 80000 blocks = %d", got)
	}
	if UsrImageSize(80000, 15000) != UsrImageSize(80100, 15010) {
		t.Error("two similar trees get different sizes")
	}
}

func TestCheckOptions(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	for _, b := range Binaries() {
		os.WriteFile(filepath.Join(bin, b), []byte("x"), 0o755)
	}
	grub := filepath.Join(dir, "BOOTX64.EFI")
	os.WriteFile(grub, []byte("MZ"), 0o644)
	good := Options{OutDir: filepath.Join(dir, "out"), Version: "1.0.0", Bin: bin, GrubEFI: grub, Cache: filepath.Join(dir, "cache")}
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		err  string
	}{
		{"no outdir", func(o *Options) { o.OutDir = "" }, "output directory"},
		{"no cache", func(o *Options) { o.Cache = "" }, "cache directory"},
		{"no version", func(o *Options) { o.Version = "" }, "version is empty"},
		{"bad version", func(o *Options) { o.Version = "1.0 beta" }, "may only hold"},
		{"bad build id", func(o *Options) { o.BuildID = "a/b" }, "build id"},
		{"no bin", func(o *Options) { o.Bin = "" }, "--bin"},
		{"bin lacks a binary", func(o *Options) { o.Bin = dir }, "updated"},
		{"no grub", func(o *Options) { o.GrubEFI = "" }, "--grub-efi"},
		{"grub is a dir", func(o *Options) { o.GrubEFI = dir }, "not a regular file"},
		{"missing trust", func(o *Options) { o.Trust = filepath.Join(dir, "nope.json") }, "--trust"},
		{"overlay not a dir", func(o *Options) { o.RootOverlay = grub }, "not a directory"},
		{"negative filler", func(o *Options) { o.Filler = -1 }, "filler"},
		{"disk too small", func(o *Options) { o.DiskSize = 2 * testimages.GiB }, "ROOT"},
		{"fine", func(o *Options) {}, ""},
		{"usr only needs no grub", func(o *Options) { o.UsrOnly, o.GrubEFI = true, "" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			err := o.check()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.Marker != o.Version+"-"+DefaultBuildID || o.DiskSize != DefaultDiskSize || o.SlotSize != DefaultSlotSize {
					t.Errorf("defaults: %+v", o)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v; want a UsageError with %q", err, tc.err)
			}
			if _, err := os.Stat(o.OutDir); o.OutDir != "" && !os.IsNotExist(err) {
				t.Errorf("a rejected build created %s", o.OutDir)
			}
		})
	}
}

func TestCacheKey(t *testing.T) {
	if a, b := cacheKey(), cacheKey(); a != b || len(a) != 20 {
		t.Fatalf("keys %q %q", a, b)
	}
	if !strings.HasSuffix(BaseDir("/c"), "/c/os/"+cacheKey()) {
		t.Error(BaseDir("/c"))
	}
	for _, want := range []string{"linux-image-cloud-amd64", "dracut", "systemd"} {
		if !strings.Contains(strings.Join(mmdebstrapOpts(), " "), want) {
			t.Errorf("mmdebstrap options lack %s", want)
		}
	}
}
