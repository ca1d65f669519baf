package uefivm_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/testimages/uefivm"
)

// Boot a host disk with a TPM and a loopback-only path to an update server, once; the
// guest's reboot ends the run, and the next boot reuses the TPM state and the variables.
func Example() {
	ctx := context.Background()
	m := &uefivm.Machine{
		Disks:    []string{"host.img"},
		VarsFile: "host-vars.fd",
		TPMState: "host-tpm",
		Forwards: []uefivm.Forward{{GuestAddr: "10.0.2.100:80", HostAddr: "127.0.0.1:8080"}},
		Console:  os.Stdout,
	}
	r, err := m.Start(ctx)
	if errors.Is(err, uefivm.ErrMissing) {
		fmt.Println("skip:", err) // names the Debian package to install
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := r.Wait(); err != nil {
		fmt.Println("boot failed:", err)
	}
}
