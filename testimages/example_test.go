package testimages_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/testimages"
)

// A disk with 1.0.0 in USR-A gets 1.0.1 installed into USR-B; the first boot tries it, and
// without a mark-good the next boot is back on 1.0.0.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "testimages-example")
	defer os.RemoveAll(dir)
	disk, usr := filepath.Join(dir, "disk.img"), filepath.Join(dir, "usr.img")

	if err := testimages.BuildDisk(ctx, disk, testimages.DiskOptions{Version: "1.0.0", Size: testimages.MinDiskSize}); err != nil {
		fmt.Println(err)
		return
	}
	size := testimages.SlotSize(testimages.MinDiskSize)
	if err := testimages.BuildUsr(ctx, usr, testimages.UsrOptions{Version: "1.0.1", Size: size}); err != nil {
		fmt.Println(err)
		return
	}
	slot, _ := testimages.InstallRaw(disk, usr)
	fmt.Println("installed into", slot.Label, slot.Attr)
	for range 2 {
		s, rel, err := testimages.Boot(disk)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("booted", s.Label, rel.Version)
	}
	// Output:
	// installed into USR-B P=2 T=1 S=0
	// booted USR-B 1.0.1
	// booted USR-A 1.0.0
}
