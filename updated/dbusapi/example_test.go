package dbusapi_test

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/dbusapi"
)

// Wait for the agent to finish installing an update, as locksmithd does.
func ExampleClient_Subscribe() {
	ctx := context.TODO()
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	c := dbusapi.NewClient(conn)
	sub, err := c.Subscribe(ctx) // subscribe first, then read the current status: nothing is missed
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()
	st, err := c.GetStatus(ctx)
	for err == nil && st.CurrentOperation != dbusapi.OpUpdatedNeedReboot {
		var s dbusapi.Signal
		if s, err = sub.Next(ctx); err == nil && s.Status != nil {
			st = *s.Status
		}
	}
	fmt.Println("reboot needed for", st.NewVersion, err)
}
