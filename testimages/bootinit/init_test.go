package bootinit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
)

// fakeSystem stands in for the kernel: "mounting" a partition of the disk image copies the
// release (and the broken marker) out of the slot's real ext4 filesystem into the mount point.
type fakeSystem struct {
	disk       string         // the image file standing in for /dev/vda
	parts      map[string]int // device path → partition number
	loadErr    error
	mountErr   error
	mu         sync.Mutex
	loaded     []string
	mounts     []string
	poweredOff bool
}

func (f *fakeSystem) LoadModule(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loadErr != nil {
		return f.loadErr
	}
	f.loaded = append(f.loaded, filepath.Base(p))
	return nil
}

func (f *fakeSystem) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.mu.Lock()
	f.mounts = append(f.mounts, source+" "+fstype)
	f.mu.Unlock()
	n, ok := f.parts[source]
	if !ok {
		return nil // proc, sysfs, devtmpfs
	}
	if f.mountErr != nil {
		return f.mountErr
	}
	if fstype != "ext4" || flags&unix.MS_RDONLY == 0 {
		return fmt.Errorf("slot mounted as %s with flags %#x, want ext4 read-only", fstype, flags)
	}
	d, err := partition.Open(f.disk, partition.ReadOnly())
	if err != nil {
		return err
	}
	defer d.Close()
	s, err := d.SlotByNumber(n)
	if err != nil {
		return err
	}
	rel, err := testimages.ReadRelease(d.SlotReader(s), s.Size)
	if err != nil {
		return fmt.Errorf("mount %s: %w", source, err)
	}
	files := map[string]string{testimages.ReleasePath: fmt.Sprintf("ID=%s\nVERSION=%s\nBOARD=%s\n", rel.ID, rel.Version, rel.Board)}
	if rel.Broken {
		files[testimages.BrokenPath] = "broken\n"
	}
	for p, body := range files {
		p = filepath.Join(target, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeSystem) Unmount(target string) error {
	ents, err := os.ReadDir(target)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(target, e.Name()))
	}
	return err
}

func (f *fakeSystem) Uptime() (float64, error) { return 1.5, nil }

func (f *fakeSystem) PowerOff() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.poweredOff = true
	return nil
}

// newRoot lays out an initramfs root as the kernel would show it: dev/vda is a real test disk
// image with 1.0.0 in USR-A, sys/block describes it and its partitions; dev/vdb is a disk
// without a GPT, which the init must pass over.
func newRoot(t *testing.T) (string, *fakeSystem) {
	t.Helper()
	root := t.TempDir()
	disk := filepath.Join(root, "dev", "vda")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(testimages.BuildDisk(t.Context(), disk, testimages.DiskOptions{Version: "1.0.0", Size: testimages.MinDiskSize}))
	must(os.WriteFile(filepath.Join(root, "dev", "vdb"), make([]byte, 1<<20), 0o644))
	f := &fakeSystem{disk: disk, parts: map[string]int{}}
	for _, n := range []int{1, 3, 4} {
		name := fmt.Sprintf("vda%d", n)
		must(os.MkdirAll(filepath.Join(root, "sys/block/vda", name), 0o755))
		must(os.WriteFile(filepath.Join(root, "sys/block/vda", name, "partition"), []byte(fmt.Sprintf("%d\n", n)), 0o444))
		must(os.WriteFile(filepath.Join(root, "dev", name), nil, 0o644))
		f.parts[filepath.Join(root, "dev", name)] = n
	}
	for _, d := range []string{"vdb", "loop0"} {
		must(os.MkdirAll(filepath.Join(root, "sys/block", d), 0o755))
	}
	return root, f
}

func slotsOf(t *testing.T, disk string) []partition.Slot {
	t.Helper()
	d, err := partition.Open(disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, err := d.Slots()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func attr(p, n int, ok bool) partition.Attributes {
	return partition.Attributes(0).WithPriority(p).WithTries(n).WithSuccessful(ok)
}

// TestBootFailures: a boot that cannot finish says why in the result and leaves the table as
// GRUB's step left it.
func TestBootFailures(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, root string, f *fakeSystem)
		want   string // in Result.Error
		health string // in Result.Health
	}{
		{
			name: "module does not load and no disk appears",
			setup: func(t *testing.T, root string, f *fakeSystem) {
				os.MkdirAll(filepath.Join(root, ModulesDir), 0o755)
				os.WriteFile(filepath.Join(root, ModulesDir, "00-virtio_blk.ko"), []byte("\x7fELF"), 0o644)
				os.RemoveAll(filepath.Join(root, "sys/block/vda"))
				f.loadErr = errors.New("exec format error")
			},
			want: "no disk with /usr slots appeared within 200ms (block devices: [vdb]); is the disk attached (virtio) and its driver built in or packed as a module?; modules that failed to load: exec format error",
		},
		{
			name:  "no disk appears",
			setup: func(t *testing.T, root string, f *fakeSystem) { os.RemoveAll(filepath.Join(root, "sys/block/vda")) },
			want:  "no disk with /usr slots appeared",
		},
		{
			// The only good slot does not mount: not healthy, and MarkBad refuses to leave
			// the disk without a bootable slot.
			name:   "slot does not mount",
			setup:  func(t *testing.T, root string, f *fakeSystem) { f.mountErr = unix.EINVAL },
			want:   "mark USR-A bad",
			health: "USR-A holds no mountable /usr",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, f := newRoot(t)
			tt.setup(t, root, f)
			before := slotsOf(t, f.disk)
			in := &Init{Root: root, Sys: f, DiskWait: 200 * time.Millisecond}
			res := in.Boot(t.Context())
			if !strings.Contains(res.Error, tt.want) || !strings.Contains(res.Health, tt.health) {
				t.Fatalf("result %+v, want error containing %q and health containing %q", res, tt.want, tt.health)
			}
			if res.Healthy || res.Committed || res.MarkedBad {
				t.Fatalf("result %+v claims a verdict", res)
			}
			if after := slotsOf(t, f.disk); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("GPT changed: %v → %v", before, after)
			}
		})
	}
}

// TestBootWalk is the QEMU test's scenario on an image file: fresh disk, a good update that
// is committed, a broken one that is marked bad and falls back.
func TestBootWalk(t *testing.T) {
	root, f := newRoot(t)
	dir := t.TempDir()
	in := &Init{Root: root, Sys: f, DiskWait: time.Second}
	install := func(version string, broken bool) {
		t.Helper()
		usr := filepath.Join(dir, version+".img")
		if err := testimages.BuildUsr(t.Context(), usr, testimages.UsrOptions{Version: version, Size: testimages.SlotSize(testimages.MinDiskSize), Broken: broken}); err != nil {
			t.Fatal(err)
		}
		if _, err := testimages.InstallRaw(f.disk, usr); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name    string
		install string
		broken  bool
		want    Result
		a, b    partition.Attributes
	}{
		{name: "fresh disk", want: Result{Slot: "USR-A", Partition: 3, Priority: 1, Successful: true, Version: "1.0.0", Healthy: true, Committed: true},
			a: attr(1, 0, true), b: attr(0, 0, false)},
		{name: "good update tried", install: "1.0.1", want: Result{Slot: "USR-B", Partition: 4, Priority: 2, Version: "1.0.1", Healthy: true, Committed: true},
			a: attr(1, 0, true), b: attr(2, 0, true)},
		{name: "good update stays", want: Result{Slot: "USR-B", Partition: 4, Priority: 2, Successful: true, Version: "1.0.1", Healthy: true, Committed: true},
			a: attr(1, 0, true), b: attr(2, 0, true)},
		{name: "broken update tried", install: "1.0.2", broken: true, want: Result{Slot: "USR-A", Partition: 3, Priority: 2, Version: "1.0.2", MarkedBad: true},
			a: attr(0, 0, false), b: attr(1, 0, true)},
		{name: "fallback", want: Result{Slot: "USR-B", Partition: 4, Priority: 1, Successful: true, Version: "1.0.1", Healthy: true, Committed: true},
			a: attr(0, 0, false), b: attr(1, 0, true)},
	}
	for _, s := range steps {
		if s.install != "" {
			install(s.install, s.broken)
		}
		res := in.Boot(t.Context())
		if res.Uptime != 1.5 || res.PartUUID == "" || res.Health == "" {
			t.Fatalf("%s: result %+v lacks uptime, partuuid or health", s.name, res)
		}
		res.PartUUID, res.Health, res.Uptime = "", "", 0
		if res != s.want {
			t.Fatalf("%s:\n got %+v\nwant %+v", s.name, res, s.want)
		}
		if got := slotsOf(t, f.disk); got[0].Attr != s.a || got[1].Attr != s.b {
			t.Fatalf("%s: GPT %v, want USR-A %v USR-B %v", s.name, got, s.a, s.b)
		}
	}
}

// TestModules: modules load in file-name order, and one that fails does not stop the others
// or the boot when the disk shows up anyway.
func TestModules(t *testing.T) {
	root, f := newRoot(t)
	dir := filepath.Join(root, ModulesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"02-virtio_blk.ko", "00-virtio_ring.ko", "01-crc32c_intel.ko", "README"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sys := &failingModule{fakeSystem: f, bad: "01-crc32c_intel.ko"}
	res := (&Init{Root: root, Sys: sys, DiskWait: time.Second}).Boot(t.Context())
	if res.Error != "" || !res.Committed {
		t.Fatalf("result %+v", res)
	}
	if want := []string{"00-virtio_ring.ko", "02-virtio_blk.ko"}; fmt.Sprint(f.loaded) != fmt.Sprint(want) {
		t.Fatalf("loaded %v, want %v", f.loaded, want)
	}
}

type failingModule struct {
	*fakeSystem
	bad string
}

func (s *failingModule) LoadModule(p string) error {
	if filepath.Base(p) == s.bad {
		return errors.New("no such device")
	}
	return s.fakeSystem.LoadModule(p)
}

// TestRun: PID 1 mounts the kernel filesystems, prints exactly one result line and powers off.
func TestRun(t *testing.T) {
	root, f := newRoot(t)
	var console bytes.Buffer
	in := &Init{Root: root, Sys: f, DiskWait: time.Second}
	if code := in.Run(t.Context(), &console); code != 0 {
		t.Fatalf("Run = %d\n%s", code, console.String())
	}
	res, err := ParseResult(console.Bytes())
	if err != nil || res.Slot != "USR-A" || !res.Committed {
		t.Fatalf("result %+v, %v\n%s", res, err, console.String())
	}
	if !f.poweredOff {
		t.Fatal("Run returned without powering off")
	}
	if n := strings.Count(console.String(), ResultPrefix); n != 1 {
		t.Fatalf("%d result lines", n)
	}
	for _, m := range []string{"proc proc", "sysfs sysfs", "devtmpfs devtmpfs"} {
		if !strings.Contains(strings.Join(f.mounts, "\n"), m) {
			t.Errorf("mounts %v lack %q", f.mounts, m)
		}
	}
}
