package enroll_test

import (
	"fmt"
	"os"

	"github.com/twinslot/twinslot/updated/enroll"
)

// A credential saved for one machine id is not loaded for another (a disk image cloned with
// its state directory enrolls again).
func Example() {
	dir, _ := os.MkdirTemp("", "state")
	defer os.RemoveAll(dir)
	enroll.Save(dir, enroll.Credential{AppID: app, MachineID: machine, Credential: "ts-host-example"})
	c, err := enroll.Load(dir, app, machine)
	fmt.Println(c.Credential, err)
	_, err = enroll.Load(dir, app, "ffffffffffffffffffffffffffffffff")
	fmt.Println(err != nil)
	// Output:
	// ts-host-example <nil>
	// true
}
