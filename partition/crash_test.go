package partition

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var errCrash = errors.New("simulated power loss")

// crashDisk is the size of the disks crashed: the 64 KiB seed layout keeps the hundreds of
// crash points cheap.
const crashDisk = 64 << 10

// crashDev passes the first `after` writes through to f, then simulates a power loss during
// the next one: only its first `tear` bytes reach the disk (0: none), and every later write
// and sync fails.
type crashDev struct {
	f       *os.File
	after   int
	tear    int
	writes  int
	crashed bool
}

func (c *crashDev) ReadAt(p []byte, off int64) (int, error) { return c.f.ReadAt(p, off) }

func (c *crashDev) WriteAt(p []byte, off int64) (int, error) {
	if c.crashed {
		return 0, errCrash
	}
	if c.writes == c.after {
		c.crashed = true
		n := min(c.tear, len(p))
		if n > 0 {
			if _, err := c.f.WriteAt(p[:n], off); err != nil {
				return 0, err
			}
		}
		return n, errCrash
	}
	c.writes++
	return c.f.WriteAt(p, off)
}

func (c *crashDev) Sync() error {
	if c.crashed {
		return errCrash
	}
	return c.f.Sync()
}

// countDev counts writes and their sizes.
type countDev struct {
	*os.File
	sizes []int
}

func (c *countDev) WriteAt(p []byte, off int64) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.File.WriteAt(p, off)
}

type crashOp struct {
	name   string
	a, b   Attributes
	damage func(t *testing.T, path string) // optional: damage a copy first
	op     func(d *Disk) error
}

func crashOps() []crashOp {
	slotB := Slot{Number: 4, PartUUID: "e03dd35c-7c2d-4a47-b3fe-27f15780a57c"}
	damagePrimary := func(t *testing.T, path string) { patch(t, path, 512+40, []byte{0xff}) }
	damageBackup := func(t *testing.T, path string) { patch(t, path, crashDisk-512+40, []byte{0xff}) }
	install := func(d *Disk) error { return d.PrepareInstall(slotB) }
	boot := func(d *Disk) error { _, err := d.NextBoot(); return err }
	return []crashOp{
		{name: "PrepareInstall", a: attr(1, 0, true), op: install},
		{name: "PrepareInstall over a tried-out B", a: attr(1, 0, true), b: attr(2, 0, false), op: install},
		{name: "NextBoot decrementing tries", a: attr(1, 0, true), b: attr(2, 1, false), op: boot},
		{name: "MarkGood", a: attr(1, 0, true), b: attr(2, 0, false), op: func(d *Disk) error { return d.MarkGood(slotB) }},
		{name: "MarkBad", a: attr(1, 0, true), b: attr(2, 0, false), op: func(d *Disk) error { return d.MarkBad(slotB) }},
		{name: "BeginInstall", a: attr(1, 0, true), b: attr(2, 0, true), op: func(d *Disk) error { return d.BeginInstall(slotB) }},
		{name: "Rollback", a: attr(1, 0, true), b: attr(2, 0, true), op: func(d *Disk) error { _, err := d.Rollback(slotB); return err }},
		{name: "PrepareInstall with damaged primary", a: attr(1, 0, true), damage: damagePrimary, op: install},
		{name: "PrepareInstall with damaged backup", a: attr(1, 0, true), damage: damageBackup, op: install},
		{name: "MarkGood with damaged primary", a: attr(1, 0, true), b: attr(2, 0, false), damage: damagePrimary, op: func(d *Disk) error { return d.MarkGood(slotB) }},
		{name: "Repair of damaged primary", a: attr(1, 0, true), damage: damagePrimary, op: func(d *Disk) error { _, err := d.Repair(); return err }},
	}
}

// tears lists how much of a write of n bytes (sector size ss) reaches the disk at a crash:
// nothing, whole sectors, and partial sectors.
func tears(n, ss int) []int {
	t := []int{0, 1, 16, 91, ss - 1}
	if n > ss {
		t = append(t, ss, ss+7, n/2, n-ss, n-1)
	}
	return t
}

// runCrashOp writes tc's starting disk in dir and runs tc's operation on a copy of it, with
// prepare applied to the opened disk first; it returns the starting image and the slots before
// and after the operation.
func runCrashOp(t *testing.T, dir string, tc crashOp, prepare func(*Disk)) (image []byte, oldSlots, newSlots []Slot) {
	t.Helper()
	orig := filepath.Join(dir, "orig.img")
	writeImage(t, orig, crashDisk, 512, seedLayout(tc.a, tc.b))
	if tc.damage != nil {
		tc.damage(t, orig)
	}
	image = readFile(t, orig)
	oldSlots = slotsT(t, openT(t, orig, ReadOnly()))
	full := filepath.Join(dir, "full.img")
	if err := os.WriteFile(full, image, 0o644); err != nil {
		t.Fatal(err)
	}
	d := openT(t, full)
	defer d.Close()
	prepare(d)
	if err := tc.op(d); err != nil {
		t.Fatal(err)
	}
	return image, oldSlots, slotsT(t, d)
}

// TestCrashAtEveryWriteStep stops every table update after each of its writes (and tears
// the write in progress at several points) and checks that the disk then reads as exactly
// the old or the new table, that a bootable slot is chosen, that USR-A (the old slot) is
// untouched unless the operation itself changes it, and that a repair brings both copies
// back in sync.
func TestCrashAtEveryWriteStep(t *testing.T) {
	for _, tc := range crashOps() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// The uninterrupted run gives the new state and the writes.
			cd := &countDev{}
			image, oldSlots, newSlots := runCrashOp(t, dir, tc, func(d *Disk) { cd.File = d.f; d.dev = cd })
			if len(cd.sizes) < 4 {
				t.Fatalf("%d writes", len(cd.sizes))
			}

			cases := 0
			for k, size := range cd.sizes {
				for _, tear := range tears(size, 512) {
					cases++
					name := fmt.Sprintf("write %d of %d, %d of %d bytes", k+1, len(cd.sizes), tear, size)
					path := filepath.Join(dir, "crash.img")
					if err := os.WriteFile(path, image, 0o644); err != nil {
						t.Fatal(err)
					}
					d := openT(t, path)
					d.dev = &crashDev{f: d.f, after: k, tear: tear}
					if err := tc.op(d); !errors.Is(err, errCrash) {
						t.Fatalf("%s: op returned %v", name, err)
					}
					d.Close()

					// After the "reboot": old or new, never anything else.
					r := openT(t, path)
					got := slotsT(t, r)
					isOld, isNew := slices.Equal(got, oldSlots), slices.Equal(got, newSlots)
					if !isOld && !isNew {
						t.Fatalf("%s: table is neither old nor new:\n got %v\n old %v\n new %v", name, got, oldSlots, newSlots)
					}
					if got[0].Attr != oldSlots[0].Attr && got[0].Attr != newSlots[0].Attr {
						t.Fatalf("%s: USR-A changed to %v", name, got[0].Attr)
					}
					if _, _, err := Next(got); err != nil {
						t.Fatalf("%s: no bootable slot: %v", name, err)
					}
					if _, err := r.Repair(); err != nil {
						t.Fatalf("%s: repair: %v", name, err)
					}
					if h, err := r.Health(); err != nil || !h.InSync {
						t.Fatalf("%s: after repair %+v %v", name, h, err)
					}
					if after := slotsT(t, r); !slices.Equal(after, got) {
						t.Fatalf("%s: repair changed the table: %v -> %v", name, got, after)
					}
					r.Close()
				}
			}
			t.Logf("%d crash points, all left the old or the new table", cases)
		})
	}
}

var errEIO = errors.New("input/output error")

// failDev fails one write or sync with an I/O error (the process goes on: no crash), and
// with readsFail every read after it.
type failDev struct {
	f         *os.File
	write     int // fail this write (0-based), or -1
	sync      int // fail this sync (0-based), or -1
	readsFail bool
	writes    int
	syncs     int
	failed    bool
}

func (c *failDev) ReadAt(p []byte, off int64) (int, error) {
	if c.failed && c.readsFail {
		return 0, errEIO
	}
	return c.f.ReadAt(p, off)
}

func (c *failDev) WriteAt(p []byte, off int64) (int, error) {
	c.writes++
	if c.writes-1 == c.write {
		c.failed = true
		return 0, errEIO
	}
	return c.f.WriteAt(p, off)
}

func (c *failDev) Sync() error {
	c.syncs++
	if c.syncs-1 == c.sync {
		c.failed = true
		return errEIO
	}
	return c.f.Sync()
}

// TestFailedWriteSaysWhetherApplied fails each write and each sync of every table update
// with an I/O error and checks that the error is a *WriteError that says what the disk
// reads afterwards: errors.Is(err, ErrWriteApplied) exactly when the disk reads (and GRUB
// boots) the new table, with the slot that boots next; a failure after the first copy was
// complete must not read as "nothing changed".
func TestFailedWriteSaysWhetherApplied(t *testing.T) {
	for _, tc := range crashOps() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			image, oldSlots, newSlots := runCrashOp(t, dir, tc, func(*Disk) {})
			applied := 0
			for k := range 4 {
				for _, step := range []string{"write", "sync"} {
					name := fmt.Sprintf("%s %d", step, k+1)
					path := filepath.Join(dir, "fail.img")
					if err := os.WriteFile(path, image, 0o644); err != nil {
						t.Fatal(err)
					}
					d := openT(t, path)
					fd := &failDev{f: d.f, write: -1, sync: -1}
					if step == "write" {
						fd.write = k
					} else {
						fd.sync = k
					}
					d.dev = fd
					err := tc.op(d)
					d.Close()
					var we *WriteError
					if !errors.As(err, &we) || !errors.Is(err, errEIO) || we.ReadErr != nil {
						t.Fatalf("%s: err = %v, want a *WriteError wrapping the I/O error", name, err)
					}
					got := slotsT(t, openT(t, path, ReadOnly()))
					isNew := slices.Equal(got, newSlots)
					if !isNew && !slices.Equal(got, oldSlots) {
						t.Fatalf("%s: table is neither old nor new: %v", name, got)
					}
					if errors.Is(err, ErrWriteApplied) != isNew || we.Applied != isNew {
						t.Fatalf("%s: disk reads the new table: %v, but the error says applied=%v: %v", name, isNew, we.Applied, err)
					}
					if next, _, _ := Next(got); we.Next != next {
						t.Fatalf("%s: error says %v boots next, the disk boots %v", name, we.Next, next)
					}
					if want := map[bool]string{true: "took effect nonetheless", false: "did not take effect"}[isNew]; !strings.Contains(err.Error(), want) ||
						!strings.Contains(err.Error(), we.Next.String()+" next") {
						t.Fatalf("%s: message %q, want %q and the next slot", name, err, want)
					}
					if isNew {
						applied++
					}
				}
			}
			if applied == 0 {
				t.Fatal("no failure point left the new table in effect")
			}
		})
	}
	t.Run("table unreadable after the failure", func(t *testing.T) {
		path := imageWith(t, attr(1, 0, true), 0)
		d := openT(t, path)
		d.dev = &failDev{f: d.f, write: 3, sync: -1, readsFail: true}
		err := d.PrepareInstall(Slot{Number: 4})
		var we *WriteError
		if !errors.As(err, &we) || we.ReadErr == nil || errors.Is(err, ErrWriteApplied) || !strings.Contains(err.Error(), "unknown whether the change took effect") {
			t.Fatalf("err = %v", err)
		}
	})
}
