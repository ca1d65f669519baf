// Command bootinit is the init (PID 1) of the QEMU boot test's initramfs: it chooses the /usr
// slot by the GPT bits as GRUB gptprio.next does, mounts it, runs the health gate, marks the
// slot good or bad, prints a TWINSLOT-BOOT result line and powers off. See package bootinit.
// Build it static: CGO_ENABLED=0 go build ./testimages/cmd/bootinit.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/testimages/bootinit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	in := &bootinit.Init{Root: "/", Sys: bootinit.RealSystem{}}
	os.Exit(in.Run(ctx, os.Stdout))
}
