package gptpriotest_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/gptpriotest"
)

// A case disk booted by the Go rule, then checked against the case.
func Example() {
	c := gptpriotest.Case{
		Name:  "install-pending",
		Slots: []string{"P=1 T=0 S=1", "P=2 T=1 S=0"},
		Want:  gptpriotest.Want{Boot: "USR-B", Slots: []string{"P=1 T=0 S=1", "P=2 T=0 S=0"}},
	}
	dir, _ := os.MkdirTemp("", "gptprio")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")
	if err := c.WriteDisk(path); err != nil {
		fmt.Println(err)
		return
	}
	before, _ := os.ReadFile(path)
	d, err := partition.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := d.NextBoot()
	d.Close()
	fmt.Println(s, s.Attr, err)
	fmt.Println(c.Check(path, before))
	// Output:
	// USR-B (#4) P=2 T=0 S=0 <nil>
	// <nil>
}
