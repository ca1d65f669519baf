package bootinit_test

import (
	"fmt"

	"github.com/twinslot/twinslot/testimages/bootinit"
)

// The harness reads the boot's verdict from the serial console.
func ExampleParseResult() {
	console := "Booting from ROM...\r\n" +
		bootinit.Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true}.Line() + "\r\n" +
		"[    2.601844] reboot: Power down\r\n"
	r, err := bootinit.ParseResult([]byte(console))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Slot, r.Version, "healthy:", r.Healthy, "committed:", r.Committed)
	// Output:
	// USR-B 1.0.1 healthy: true committed: true
}
