package updated_test

import (
	"fmt"
	"time"

	"github.com/twinslot/twinslot/updated"
)

// The state machine is pure: replaying events shows the states an update walks through.
func ExampleTransition() {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	r := updated.NewRecord()
	for _, ev := range []updated.Event{
		{Kind: updated.EvCheckDue},
		{Kind: updated.EvUpdateFound, Delivered: true, BootedVersion: "1.0.0",
			Offer: &updated.Offer{Version: "2.0.0", URLs: []string{"https://updates.example/p.tsp"}, Size: 1 << 20}},
		{Kind: updated.EvDownloadStarted, Target: "USR-B"},
		{Kind: updated.EvDownloaded, Image: &updated.Image{Version: "2.0.0", SecurityVersion: 3}},
		{Kind: updated.EvInstalled},
	} {
		ev.Now = now
		var err error
		if r, err = updated.Transition(r, ev); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(r.State.Operation())
	}
	// After the reboot into USR-B: the slot is on trial.
	r = updated.Resume(r, updated.BootFacts{BootID: "b2", Slot: "USR-B", Version: "2.0.0", Now: now})
	fmt.Println(r.State.Operation(), r.Boot.State, "from", r.Boot.PreviousVersion)
	// Output:
	// UPDATE_STATUS_CHECKING_FOR_UPDATE
	// UPDATE_STATUS_UPDATE_AVAILABLE
	// UPDATE_STATUS_DOWNLOADING
	// UPDATE_STATUS_FINALIZING
	// UPDATE_STATUS_UPDATED_NEED_REBOOT
	// UPDATE_STATUS_VERIFYING verifying from 1.0.0
}
