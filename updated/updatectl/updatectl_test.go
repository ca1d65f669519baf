package updatectl

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/twinslot/twinslot/partition/esp/esptest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/tools/cli"
)

// noHost is a host on which nothing says where /usr is.
var noHost = fstest.MapFS{"proc/cmdline": {Data: []byte("quiet\n")}}

func run(t *testing.T, env Env, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(t.Context(), env, args, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func slotsJSON(t *testing.T, env Env, disk string) SlotsReport {
	t.Helper()
	code, out, errs := run(t, env, "slots", "--disk", disk, "--json")
	if code != 0 {
		t.Fatalf("slots: %d %s", code, errs)
	}
	var r SlotsReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// newDisk builds a 64 MiB disk with 1.0.0 and a 1.0.1 image for it.
func newDisk(t *testing.T) (disk, usr string) {
	t.Helper()
	dir := t.TempDir()
	disk, usr = filepath.Join(dir, "disk.img"), filepath.Join(dir, "usr.img")
	if err := testimages.BuildDisk(t.Context(), disk, testimages.DiskOptions{Version: "1.0.0", Size: testimages.MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	if err := testimages.BuildUsr(t.Context(), usr, testimages.UsrOptions{Version: "1.0.1", Size: testimages.SlotSize(testimages.MinDiskSize)}); err != nil {
		t.Fatal(err)
	}
	return disk, usr
}

// TestWalk is the walk: install 1.0.1, boot it, mark-good, and slots shows USR-B
// successful and booting next; then rollback goes back to 1.0.0.
func TestWalk(t *testing.T) {
	env := Env{Host: noHost}
	disk, usr := newDisk(t)

	r := slotsJSON(t, env, disk)
	if r.Active != "" || r.Next != "USR-A" || len(r.Slots) != 2 || r.Slots[0].Version != "1.0.0" || r.Slots[1].Unreadable != "no /usr image" || !r.InSync {
		t.Fatalf("fresh disk: %+v", r)
	}
	if code, _, errs := run(t, env, "mark-good", "--disk", disk); code != 1 || !strings.Contains(errs, "--slot") {
		t.Fatalf("mark-good without a known booted slot: %d %s", code, errs)
	}
	// Committing the empty USR-B would make the host boot nothing, for ever.
	before, _ := os.ReadFile(disk)
	if code, _, errs := run(t, env, "mark-good", "--disk", disk, "--slot", "USR-B"); code != 1 || !strings.Contains(errs, "holds no /usr image") || !strings.Contains(errs, "install") {
		t.Fatalf("mark-good of the empty slot: %d %s", code, errs)
	}
	if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
		t.Fatal("the refused mark-good changed the disk")
	}

	if _, err := testimages.InstallRaw(disk, usr); err != nil {
		t.Fatal(err)
	}
	if _, _, err := testimages.Boot(disk); err != nil {
		t.Fatal(err)
	}
	r = slotsJSON(t, env, disk)
	b := r.Slots[1]
	if r.Active != "USR-B" || r.Next != "USR-A" || b.Version != "1.0.1" || b.Tries != 0 || b.Successful || !b.Active || b.Attributes != "0002000000000000" {
		t.Fatalf("after booting B: %+v", r)
	}
	code, out, errs := run(t, env, "mark-good", "--disk", disk)
	if code != 0 || !strings.Contains(out, "marked USR-B (#4) good: P=2 T=0 S=1") {
		t.Fatalf("mark-good: %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, env, "slots", "--disk", disk)
	if code != 0 || !regexpLine(out, "4", "USR-B", "2", "0", "yes", "1.0.1", "active, boots next") {
		t.Fatalf("slots:\n%s", out)
	}
	code, out, errs = run(t, env, "rollback", "--disk", disk)
	if code != 0 || !strings.Contains(out, "USR-A (#3) (1.0.0) boots next") {
		t.Fatalf("rollback: %d %q %q", code, out, errs)
	}
	if r := slotsJSON(t, env, disk); r.Next != "USR-A" || r.Slots[1].Priority != 1 || !r.Slots[1].Successful {
		t.Fatalf("after rollback: %+v", r)
	}
}

// regexpLine reports whether some line of out has all fields in order.
func regexpLine(out string, fields ...string) bool {
	for line := range strings.Lines(out) {
		rest, ok := line, true
		for _, f := range fields {
			i := strings.Index(rest, f)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(f):]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestRefusals(t *testing.T) {
	env := Env{Host: noHost}
	disk, usr := newDisk(t)
	if _, err := testimages.InstallRaw(disk, usr); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(disk)
	notDisk := filepath.Join(t.TempDir(), "zeros.img")
	if err := os.WriteFile(notDisk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "rollback to a pending update", args: []string{"rollback", "--disk", disk, "--slot", "USR-A"}, code: 1, stderr: "has not booted yet"},
		{name: "unknown slot", args: []string{"mark-good", "--disk", disk, "--slot", "USR-C"}, code: 1, stderr: "unknown slot"},
		{name: "not a GPT disk", args: []string{"slots", "--disk", notDisk}, code: 1, stderr: "not a GPT disk"},
		{name: "no disk on this host", args: []string{"slots"}, code: 1, stderr: "pass --disk"},
		{name: "extra argument", args: []string{"slots", "x"}, code: 2, stderr: "too many arguments"},
		{name: "help", args: []string{"rollback", "--help"}, code: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(t, env, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.stderr) {
				t.Fatalf("code %d stderr %q", code, errs)
			}
		})
	}
	if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
		t.Fatal("refused commands changed the disk")
	}
}

// TestLocateLiveHost: without --disk the disk and the booted slot come from the host.
func TestLocateLiveHost(t *testing.T) {
	link := func(target string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
	}
	host := fstest.MapFS{
		"proc/cmdline": {Data: []byte("mount.usr=/dev/mapper/usr verity.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c\n")},
		"dev/disk/by-partuuid/e03dd35c-7c2d-4a47-b3fe-27f15780a57c":     link("../../nvme0n1p4"),
		"sys/class/block/nvme0n1p4":                                     link("../../devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p4"),
		"sys/devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p4/partition": {Data: []byte("4\n")},
	}
	tg, err := Env{Host: host}.locate("")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Disk != "/dev/nvme0n1" || tg.Booted == nil || tg.Booted.Number != 4 || tg.Booted.PartUUID != "e03dd35c-7c2d-4a47-b3fe-27f15780a57c" {
		t.Fatalf("target %+v %+v", tg, tg.Booted)
	}
	// The same host does not make a slot of an unrelated image "active".
	disk, _ := newDisk(t)
	r := slotsJSON(t, Env{Host: host}, disk)
	if r.Active != "" {
		t.Fatalf("image slot %s shown active from the host's cmdline", r.Active)
	}
}

// TestRollbackLeavesESP: rollback and mark-good change GPT bits only; on a host with the
// kernel-per-slot ESP layout (root/boot/twinslot) nothing there is written: each slot's kernel
// was installed with the slot and still matches it.
func TestRollbackLeavesESP(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	os.WriteFile(filepath.Join(root, "proc/cmdline"), []byte("quiet\n"), 0o644)
	boot := filepath.Join(root, "boot")
	esptest.Write(t, boot, map[string][]byte{"vmlinuz-a": []byte("a"), "initrd-a": []byte("a"), "vmlinuz-b": []byte("b"), "initrd-b": []byte("b")})
	before := esptest.Content(t, boot)
	st, err := os.Stat(filepath.Join(boot, "twinslot"))
	if err != nil {
		t.Fatal(err)
	}
	env := Env{Host: os.DirFS(root)}
	disk, usr := newDisk(t)
	if _, err := testimages.InstallRaw(disk, usr); err != nil {
		t.Fatal(err)
	}
	if _, _, err := testimages.Boot(disk); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"mark-good", "--disk", disk}, {"rollback", "--disk", disk}} {
		if code, _, errs := run(t, env, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
	}
	if r := slotsJSON(t, env, disk); r.Next != "USR-A" {
		t.Fatalf("after rollback: %+v", r)
	}
	st2, err := os.Stat(filepath.Join(boot, "twinslot"))
	if err != nil {
		t.Fatal(err)
	}
	if got := esptest.Content(t, boot); got != before || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("the ESP changed:\n%s\nwas\n%s", got, before)
	}
}

// TestSlotsRepair: slots names a damaged GPT copy and how to repair it, and --repair does;
// a foreign layout (a disk grown after the image was written) is shown with the error saying
// what to run, never as "the next change repairs it", and --repair refuses without writing.
func TestSlotsRepair(t *testing.T) {
	env := Env{Host: noHost}
	disk, _ := newDisk(t)
	st, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	repairJSON := func(t *testing.T) (int, SlotsReport, string) {
		t.Helper()
		code, out, errs := run(t, env, "slots", "--disk", disk, "--repair", "--json")
		var r SlotsReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("--repair --json: %v in %q (stderr %q)", err, out, errs)
		}
		return code, r, errs
	}

	t.Run("foreign layout", func(t *testing.T) {
		orig, _ := os.ReadFile(disk)
		t.Cleanup(func() { os.WriteFile(disk, orig, 0o644) })
		if err := os.Truncate(disk, st.Size()+1<<20); err != nil {
			t.Fatal(err)
		}
		before, _ := os.ReadFile(disk)
		code, out, _ := run(t, env, "slots", "--disk", disk)
		if code != 0 || strings.Contains(out, "repairs it") || !strings.Contains(out, "GPT primary: unsupported GPT layout: run 'sgdisk -e'") ||
			!strings.Contains(out, "every change of the slots fails until it is fixed") {
			t.Fatalf("slots: %d\n%s", code, out)
		}
		r := slotsJSON(t, env, disk)
		if r.PrimaryOK || !r.UnsupportedLayout || !strings.Contains(r.PrimaryError, "sgdisk -e") || r.BackupError == "" || r.Repair != "" {
			t.Fatalf("slots --json: %+v", r)
		}
		code, out, errs := run(t, env, "slots", "--disk", disk, "--repair")
		if code != 1 || !strings.Contains(errs, "--repair refused to write") || !strings.Contains(errs, "sgdisk -e") ||
			strings.Contains(out, "repaired") || !strings.Contains(out, "GPT primary: unsupported GPT layout") {
			t.Fatalf("--repair: %d\nstdout %s\nstderr %s", code, out, errs)
		}
		code, r, _ = repairJSON(t)
		if code != 1 || r.Repair != RepairRefused || !strings.Contains(r.RepairError, "sgdisk -e") || !r.UnsupportedLayout {
			t.Fatalf("--repair --json: %d %+v", code, r)
		}
		if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
			t.Fatal("the refused repair wrote to the disk")
		}
	})
	t.Run("damaged primary", func(t *testing.T) {
		f, err := os.OpenFile(disk, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte{0xff}, 2*512+100*128) // an unused entry: the array CRC breaks
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		code, out, _ := run(t, env, "slots", "--disk", disk)
		if code != 0 || !strings.Contains(out, "primary ok=false, backup ok=true — the next change repairs it, or run 'updatectl slots --repair'") {
			t.Fatalf("slots: %d\n%s", code, out)
		}
		if r := slotsJSON(t, env, disk); r.PrimaryOK || r.UnsupportedLayout || !strings.Contains(r.PrimaryError, "CRC") || r.BackupError != "" {
			t.Fatalf("slots --json: %+v", r)
		}
		code, out, errs := run(t, env, "slots", "--disk", disk, "--repair")
		if code != 0 || !strings.Contains(out, "repaired the GPT of "+disk) || !regexpLine(out, "3", "USR-A", "1", "0", "yes", "1.0.0", "boots next") {
			t.Fatalf("--repair: %d\nstdout %s\nstderr %s", code, out, errs)
		}
		if r := slotsJSON(t, env, disk); !r.PrimaryOK || !r.BackupOK || !r.InSync || r.PrimaryError != "" || r.Next != "USR-A" {
			t.Fatalf("after --repair: %+v", r)
		}
	})
	t.Run("nothing to repair", func(t *testing.T) {
		before, _ := os.ReadFile(disk)
		code, out, _ := run(t, env, "slots", "--disk", disk, "--repair")
		if code != 0 || !strings.Contains(out, "needs no repair") {
			t.Fatalf("--repair: %d\n%s", code, out)
		}
		if code, r, _ := repairJSON(t); code != 0 || r.Repair != RepairNotNeeded || r.RepairError != "" || !r.InSync {
			t.Fatalf("--repair --json: %d %+v", code, r)
		}
		if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
			t.Fatal("--repair of a sound GPT wrote to the disk")
		}
	})
	t.Run("help", func(t *testing.T) {
		code, out, errs := run(t, env, "slots", "--help")
		if code != 0 || !strings.Contains(out+errs, "--repair") || !strings.Contains(out+errs, "sgdisk -e") {
			t.Fatalf("slots --help: %d\n%s%s", code, out, errs)
		}
	})
}
