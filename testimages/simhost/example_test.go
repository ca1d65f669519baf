package simhost_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/testimages/simhost"
	"github.com/twinslot/twinslot/updated"
)

// A simulated host runs the real agent; Live reboots it whenever the agent (or a reboot
// coordinator calling Reboot) asks to.
func ExampleHost_Live() {
	ctx, cancel := context.WithCancel(context.TODO())
	defer cancel()
	dir, _ := os.MkdirTemp("", "simhost")
	defer os.RemoveAll(dir)
	h, err := simhost.New(ctx, dir, simhost.Options{Version: "1.0.0", Server: "http://127.0.0.1:8080/v1/update/"})
	if err != nil {
		fmt.Println(err)
		return
	}
	slot, rel, boots := h.Booted()
	fmt.Println(slot.Label, rel.Version, boots)
	cfg := updated.Config{OnPersist: func(r updated.Record) error {
		if r.State == updated.UpdatedNeedReboot {
			go h.Reboot(ctx)
		}
		return nil
	}}
	go h.Live(ctx, cfg)
}
