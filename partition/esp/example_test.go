package esp_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/esp"
)

func ExampleInstall() {
	dir, _ := os.MkdirTemp("", "esp")
	defer os.RemoveAll(dir)
	os.Mkdir(filepath.Join(dir, esp.Subdir), 0o755) // the image builder makes the layout
	if !esp.Present(dir) {
		return // a host that boots its kernel some other way
	}
	letter, _ := esp.Letter(partition.Slot{Number: 4, Label: "USR-B"})
	kernel, initrd := []byte("kernel of the new slot"), []byte("initrd of the new slot")
	err := esp.Install(context.Background(), dir, letter,
		esp.Source{Name: esp.KernelPath, R: bytes.NewReader(kernel), Size: int64(len(kernel))},
		esp.Source{Name: esp.InitrdPath, R: bytes.NewReader(initrd), Size: int64(len(initrd))})
	b, _ := os.ReadFile(filepath.Join(dir, esp.Subdir, "vmlinuz-b"))
	fmt.Println(string(b), err)
	// Output: kernel of the new slot <nil>
}
