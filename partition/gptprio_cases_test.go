package partition_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/gptpriotest"
)

// TestGptprioCases runs the shared selection table (testdata/gptprio-cases.json), which the
// GRUB module also runs under QEMU (testimages/uefivm), against Next and Disk.NextBoot on
// real GPT images.
func TestGptprioCases(t *testing.T) {
	cases, err := gptpriotest.Load(filepath.Join("testdata", "gptprio-cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := c.WriteDisk(path); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, wantBoot := c.WantSlot()

			if c.Damage != gptpriotest.DamageBoth {
				checkPure(t, c, want, wantBoot)
			}

			got, err := nextBoot(path, c.Sector())
			switch {
			case !wantBoot && err == nil:
				t.Fatalf("NextBoot chose %v, want an error (nothing bootable)", got)
			case !wantBoot && !errors.Is(err, partition.ErrNoBootableSlot) && !errors.Is(err, partition.ErrBothTablesCorrupt):
				t.Fatalf("NextBoot: %v, want ErrNoBootableSlot or ErrBothTablesCorrupt", err)
			case wantBoot && err != nil:
				t.Fatalf("NextBoot: %v", err)
			case wantBoot && (got.Number != want.Number || !strings.EqualFold(got.PartUUID, want.GUID)):
				t.Fatalf("NextBoot chose %v (%s), want %s (%s)", got, got.PartUUID, want.Label, want.GUID)
			}
			if err := c.Check(path, before); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkPure runs Next on the case's slots without any disk.
func checkPure(t *testing.T, c gptpriotest.Case, want gptpriotest.Slot, wantBoot bool) {
	t.Helper()
	var slots []partition.Slot
	for i, s := range gptpriotest.Slots()[:len(c.Slots)] {
		a, err := gptpriotest.ParseAttributes(c.Slots[i])
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, partition.Slot{Number: s.Number, Label: s.Label, Attr: a})
	}
	got, out, err := partition.Next(slots)
	if !wantBoot {
		if !errors.Is(err, partition.ErrNoBootableSlot) {
			t.Fatalf("Next: %v, want ErrNoBootableSlot", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	if got.Number != want.Number {
		t.Fatalf("Next chose %v, want %s", got, want.Label)
	}
	for i, s := range out {
		if s.Attr.String() != c.Want.Slots[i] {
			t.Errorf("Next: %v is %v after, want %s", s, s.Attr, c.Want.Slots[i])
		}
	}
}

func nextBoot(path string, ss int) (partition.Slot, error) {
	d, err := partition.Open(path, partition.SectorSize(ss))
	if err != nil {
		return partition.Slot{}, err
	}
	defer d.Close()
	return d.NextBoot()
}
