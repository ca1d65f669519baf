package partition_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/twinslot/twinslot/partition"
)

// A fresh disk boots USR-A; an image installed into USR-B gets one try; without MarkGood
// the next boot falls back to USR-A, with it USR-B stays.
func Example() {
	dir, _ := os.MkdirTemp("", "partition-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "disk.img")
	makeDisk(path)

	d, err := partition.Open(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	a, _ := d.SlotByLabel("USR-A")
	b, _ := d.Other(a)

	boot := func() {
		s, err := d.NextBoot()
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("boot %s (%v)\n", s.Label, s.Attr)
	}
	boot()
	_, _ = d.SlotWriter(b).WriteAt([]byte("new /usr image"), 0)
	_ = d.PrepareInstall(b)
	boot()
	boot() // not marked good: back to USR-A
	_ = d.PrepareInstall(b)
	boot()
	_ = d.MarkGood(b)
	boot()
	// Output:
	// boot USR-A (P=1 T=0 S=1)
	// boot USR-B (P=2 T=0 S=0)
	// boot USR-A (P=1 T=0 S=1)
	// boot USR-B (P=2 T=0 S=0)
	// boot USR-B (P=2 T=0 S=1)
}

func makeDisk(path string) {
	f, _ := os.Create(path)
	defer f.Close()
	_ = f.Truncate(8 << 20)
	usr := gpt.Type(partition.TypeUSR)
	t := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 3, Start: 2048, Size: 2 << 20, Type: usr, Name: "USR-A", Attributes: 0x0101000000000000},
		{Index: 4, Start: 2048 + 4096, Size: 2 << 20, Type: usr, Name: "USR-B"},
	}}
	_ = t.Write(f, 8<<20)
}

func ExamplePrioritize() {
	slots := []partition.Slot{
		{Number: 3, Label: "USR-A", Attr: partition.Attributes(0).WithPriority(1).WithSuccessful(true)},
		{Number: 4, Label: "USR-B"},
	}
	out, _ := partition.PlanInstall(slots, 4)
	for _, s := range out {
		fmt.Printf("%s %v %#016x\n", s.Label, s.Attr, uint64(s.Attr))
	}
	// Output:
	// USR-A P=1 T=0 S=1 0x0101000000000000
	// USR-B P=2 T=1 S=0 0x0012000000000000
}

func ExampleParseCmdline() {
	b, _ := partition.ParseCmdline("mount.usr=/dev/mapper/usr verity.usr=PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132 rootflags=rw")
	fmt.Println(b.PartUUID, b.From)
	// Output: 7130c94a-213a-4e5a-8e26-6cce9662f132 cmdline verity.usr
}
