package newc_test

import (
	"bytes"
	"fmt"

	"github.com/twinslot/twinslot/testimages/qemuboot/newc"
)

// An initramfs with a console node and an init program; the parent "dev" is added on its own.
func Example() {
	var buf bytes.Buffer
	w := newc.NewWriter(&buf)
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		fmt.Println(err)
		return
	}
	if err := w.File("init", 0o755, []byte("#!/bin/sh\n")); err != nil {
		fmt.Println(err)
		return
	}
	if err := w.Close(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(buf.Len(), "bytes, multiple of 4:", buf.Len()%4 == 0)
	// Output:
	// 492 bytes, multiple of 4: true
}
