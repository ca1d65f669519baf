package testimages

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition"
)

// TestWalk is the "done when" walk on a small disk: disk 1.0.0 → usr 1.0.1 →
// install → boot B (tries 1→0) → mark good → B stays; a second install without mark-good
// falls back to the good slot on the following boot.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := BuildDisk(t.Context(), disk, DiskOptions{Version: "1.0.0", Size: MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	slot := SlotSize(MinDiskSize)
	usr1 := filepath.Join(dir, "usr-1.0.1.img")
	if err := BuildUsr(t.Context(), usr1, UsrOptions{Version: "1.0.1", Size: slot}); err != nil {
		t.Fatal(err)
	}
	boot := func(wantLabel, wantVersion string, wantAttr partition.Attributes) {
		t.Helper()
		s, rel, err := Boot(disk)
		if err != nil {
			t.Fatal(err)
		}
		if s.Label != wantLabel || rel.Version != wantVersion || s.Attr != wantAttr {
			t.Fatalf("booted %s %v %s, want %s %v %s", s.Label, s.Attr, rel.Version, wantLabel, wantAttr, wantVersion)
		}
	}
	attr := func(p, n int, ok bool) partition.Attributes {
		return partition.Attributes(0).WithPriority(p).WithTries(n).WithSuccessful(ok)
	}
	boot("USR-A", "1.0.0", attr(1, 0, true))
	s, err := InstallRaw(disk, usr1)
	if err != nil || s.Label != "USR-B" || s.Attr != attr(2, 1, false) {
		t.Fatalf("install: %v %v", s, err)
	}
	boot("USR-B", "1.0.1", attr(2, 0, false))
	cmdline, err := os.ReadFile(CmdlinePath(disk))
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := partition.ParseCmdline(string(cmdline)); !ok || b.PartUUID != s.PartUUID || !strings.Contains(string(cmdline), "vmlinuz-b") {
		t.Fatalf("cmdline %q", cmdline)
	}
	d, err := partition.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.MarkGood(s); err != nil {
		t.Fatal(err)
	}
	d.Close()
	boot("USR-B", "1.0.1", attr(2, 0, true))

	// Second walk: 1.0.2 goes to USR-A; without mark-good the next boot is USR-B again.
	usr2 := filepath.Join(dir, "usr-1.0.2.img")
	if err := BuildUsr(t.Context(), usr2, UsrOptions{Version: "1.0.2", Base: usr1, Change: 0.1}); err != nil {
		t.Fatal(err)
	}
	s, err = InstallRaw(disk, usr2)
	if err != nil || s.Label != "USR-A" {
		t.Fatalf("install 2: %v %v", s, err)
	}
	boot("USR-A", "1.0.2", attr(2, 0, false))
	boot("USR-B", "1.0.1", attr(1, 0, true))
	boot("USR-B", "1.0.1", attr(1, 0, true))

	// A broken build boots (and would then fail its health check).
	usr3 := filepath.Join(dir, "usr-1.0.3.img")
	if err := BuildUsr(t.Context(), usr3, UsrOptions{Version: "1.0.3", Base: usr2, Change: 0.01, Broken: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := InstallRaw(disk, usr3); err != nil {
		t.Fatal(err)
	}
	_, rel, err := Boot(disk)
	if err != nil || !rel.Broken || rel.Version != "1.0.3" {
		t.Fatalf("broken boot: %+v %v", rel, err)
	}
	if _, err := ReadReleaseFile(usr1); err != nil || errors.Is(err, ErrNoRelease) {
		t.Fatal(err)
	}
}
