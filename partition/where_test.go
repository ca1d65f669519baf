package partition

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// TestActiveOf is the one rule for the active slot, every case the three tools meet.
func TestActiveOf(t *testing.T) {
	const disk = "/dev/vda"
	committedA := ab(attr(2, 0, true), attr(1, 0, true))
	trialB := ab(attr(1, 0, true), attr(2, 1, false)) // USR-B installed, not yet booted
	for _, tc := range []struct {
		name       string
		slots      []Slot
		b          *Booted
		want       string
		wantBooted bool
		wantErr    error
	}{
		// Failures first.
		{name: "image without a committed slot", slots: ab(attr(0, 0, false), attr(2, 1, false)), wantErr: ErrNoActiveSlot},
		{name: "committed slot of priority 0 does not count", slots: ab(attr(0, 0, true), attr(0, 0, true)), wantErr: ErrNoActiveSlot},
		{name: "placed boot naming no slot is refused", slots: committedA, b: &Booted{PartUUID: "00000000-0000-0000-0000-000000000000", Disk: disk, Number: 9}, wantErr: ErrUnknownSlot},
		{name: "number on another disk", slots: committedA, b: &Booted{Disk: "/dev/sdz", Number: 3}, wantErr: ErrUnknownSlot},
		// A boot names the slot: it wins over the bits.
		{name: "booted by PARTUUID", slots: trialB, b: &Booted{PartUUID: strings.ToLower(guidB)}, want: "USR-B", wantBooted: true},
		{name: "booted by label", slots: committedA, b: &Booted{PartLabel: "USR-B"}, want: "USR-B", wantBooted: true},
		{name: "booted by number on this disk", slots: committedA, b: &Booted{Disk: disk, Number: 4, DevNum: "254:4"}, want: "USR-B", wantBooted: true},
		// Nothing (or an unplaced boot of another disk) names a slot: the committed slot.
		{name: "image: highest committed priority", slots: committedA, want: "USR-A"},
		{name: "image: an uncommitted higher priority is a trial, not active", slots: trialB, want: "USR-A"},
		{name: "image: tie goes to the lower number", slots: ab(attr(1, 0, true), attr(1, 0, true)), want: "USR-A"},
		{name: "unplaced boot of another disk", slots: committedA, b: &Booted{PartUUID: "00000000-0000-0000-0000-000000000000"}, want: "USR-A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, booted, err := ActiveOf(tc.slots, disk, tc.b)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || s.Label != tc.want || booted != tc.wantBooted {
				t.Fatalf("got %s booted=%v %v, want %s booted=%v", s.Label, booted, err, tc.want, tc.wantBooted)
			}
		})
	}
}

// TestFindDisk: which disk and which boot record each tool starts from.
func TestFindDisk(t *testing.T) {
	dir := t.TempDir()
	withSidecar := filepath.Join(dir, "booted.img")
	os.WriteFile(withSidecar, nil, 0o644)
	os.WriteFile(CmdlinePath(withSidecar), []byte("BOOT_IMAGE=/flatcar/vmlinuz-b mount.usr=PARTUUID="+strings.ToLower(guidB)+" rw\n"), 0o644)
	plain := filepath.Join(dir, "plain.img")
	os.WriteFile(plain, nil, 0o644)
	live := host("mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132", "") // vda3 on /dev/vda
	unplaced := fstest.MapFS{"proc/cmdline": {Data: []byte("mount.usr=PARTLABEL=USR-A")}}
	for _, tc := range []struct {
		name     string
		host     fs.FS // nil: no host filesystem
		disk     string
		wantErr  string
		wantDisk string
		wantFrom string // Booted.From; "" for no boot
	}{
		{name: "no host, no disk", wantErr: "pass --disk"},
		{name: "host without a booted /usr", host: host("quiet", ""), wantErr: "pass --disk"},
		{name: "live host", host: live, wantDisk: "/dev/vda", wantFrom: "cmdline mount.usr"},
		{name: "live host, --disk of the booted disk", host: live, disk: "/dev/vda", wantDisk: "/dev/vda", wantFrom: "cmdline mount.usr"},
		{name: "image with a recorded boot", host: live, disk: withSidecar, wantDisk: withSidecar, wantFrom: CmdlinePath(withSidecar)},
		{name: "image: a live host's /usr on another disk does not count", host: live, disk: plain, wantDisk: plain},
		{name: "image: a root tree that cannot place its /usr", host: unplaced, disk: plain, wantDisk: plain, wantFrom: "cmdline mount.usr"},
		{name: "image, no host", disk: plain, wantDisk: plain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := FindDisk(tc.host, tc.disk)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			from := ""
			if w.Booted != nil {
				from = w.Booted.From
			}
			if w.Disk != tc.wantDisk || from != tc.wantFrom {
				t.Fatalf("got %s from %q, want %s from %q", w.Disk, from, tc.wantDisk, tc.wantFrom)
			}
		})
	}
}

// TestWhereActive runs the rule on a real image: the recorded boot names USR-B even though
// USR-A is the committed slot.
func TestWhereActive(t *testing.T) {
	path := freshImage(t)
	os.WriteFile(CmdlinePath(path), []byte("mount.usr=PARTUUID="+strings.ToLower(guidB)+"\n"), 0o644)
	w, err := FindDisk(nil, path)
	if err != nil {
		t.Fatal(err)
	}
	d := openT(t, path, ReadOnly())
	s, booted, err := w.Active(d)
	if err != nil || s.Label != "USR-B" || !booted {
		t.Fatalf("got %v booted=%v %v", s, booted, err)
	}
	os.Remove(CmdlinePath(path))
	if w, err = FindDisk(nil, path); err != nil {
		t.Fatal(err)
	}
	want, _ := Committed(mustSlots(t, d))
	if s, booted, err = w.Active(d); err != nil || booted || s.Number != want.Number {
		t.Fatalf("without a recorded boot: got %v booted=%v %v, want the committed %v", s, booted, err, want)
	}
}

func mustSlots(t *testing.T, d *Disk) []Slot {
	t.Helper()
	s, err := d.Slots()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
