package sysd_test

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/sysd"
)

// A daemon's main reboots through logind on the system bus, unless an inhibitor blocks it.
// (No Output: it would reboot the machine running the example.)
func ExampleLogind() {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	ctx := context.Background()
	l := sysd.Logind{Conn: conn}
	if in, err := l.BlockingInhibitors(ctx); err == nil && len(in) > 0 {
		fmt.Println("reboot blocked by", in[0])
		return
	}
	if err := l.Reboot(ctx); err != nil {
		fmt.Println(err)
	}
}

func ExampleInhibitor_String() {
	in := sysd.Inhibitor{What: "shutdown", Who: "backup", Why: "copying", Mode: "block", PID: 7}
	fmt.Println(in)
	// Output: backup (pid 7): copying
}
