package reboot_test

import (
	"fmt"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

// After a reboot, the slot goes back only when the version the host rebooted for is committed.
func ExampleDecide() {
	h := locksmith.Holder{ID: "m1", BootID: "boot-1", FromVersion: "1.0", ToVersion: "2.0"}
	idle := dbusapi.Status{CurrentOperation: dbusapi.OpIdle}
	for _, boot := range []dbusapi.BootStatus{
		{State: "verifying", BootedVersion: "2.0"},
		{State: "committed", BootedVersion: "2.0"},
		{State: "rolled-back", BootedVersion: "1.0", PreviousVersion: "2.0"},
	} {
		act, why := reboot.Decide(h, "boot-2", boot, idle)
		fmt.Printf("%s: %s (%s)\n", boot.State, act, why)
	}
	// Output:
	// verifying: wait (booted 2.0, health gate running)
	// committed: release (boot 2.0 committed)
	// rolled-back: keep-rolled-back (version 2.0 failed and the host rolled back to 1.0)
}
