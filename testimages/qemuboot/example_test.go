package qemuboot_test

import (
	"fmt"
	"testing/fstest"

	"github.com/twinslot/twinslot/testimages/qemuboot"
)

// The drivers for a virtio disk with ext4, resolved against a kernel that builds ext4 in:
// virtio_blk and virtio_pci are packed after what they depend on.
func ExampleModuleIndex_Resolve() {
	modules := fstest.MapFS{
		"modules.dep": {Data: []byte("kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n" +
			"kernel/drivers/virtio/virtio_ring.ko:\n" +
			"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n" +
			"kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n")},
		"modules.builtin": {Data: []byte("kernel/fs/ext4/ext4.ko\n")},
	}
	ix, err := qemuboot.LoadModuleIndex(modules)
	if err != nil {
		fmt.Println(err)
		return
	}
	files, err := ix.Resolve(qemuboot.BootModules()...)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range files {
		fmt.Println(qemuboot.ModuleName(f))
	}
	// Output:
	// virtio_ring
	// virtio
	// virtio_pci
	// virtio_blk
}
