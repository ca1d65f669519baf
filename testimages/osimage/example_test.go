package osimage_test

import (
	"fmt"

	"github.com/twinslot/twinslot/testimages/osimage"
)

func ExampleDiskLayout() {
	parts, err := osimage.DiskLayout(osimage.DefaultDiskSize, osimage.DefaultSlotSize)
	if err != nil {
		panic(err)
	}
	for _, p := range parts {
		fmt.Printf("%d %-10s %5d MiB at %4d MiB, attributes %#016x\n", p.Number, p.Label, p.Size>>20, p.Start>>20, uint64(p.Attr))
	}
	// Output:
	// 1 EFI-SYSTEM   256 MiB at    1 MiB, attributes 0x0000000000000000
	// 3 USR-A       1024 MiB at  257 MiB, attributes 0x0101000000000000
	// 4 USR-B       1024 MiB at 1281 MiB, attributes 0x0000000000000000
	// 9 ROOT         766 MiB at 2305 MiB, attributes 0x0000000000000000
}

func ExampleKernelArgs() {
	fmt.Println(osimage.KernelArgs("7130c94a-213a-4e5a-8e26-6cce9662f132"))
	// Output:
	// root=PARTUUID=b1a7c0de-0009-4000-8000-000000000009 mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 mount.usrfstype=ext4 mount.usrflags=ro ro console=ttyS0,115200 panic=10 loglevel=4 systemd.show_status=1
}
