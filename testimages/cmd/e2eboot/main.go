// Command e2eboot walks a real UEFI VM through an update and a rollback (package
// testimages/realboot; make e2e-boot).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/testimages/mkimage"
	"github.com/twinslot/twinslot/testimages/realboot"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := realboot.Env{Cache: mkimage.DefaultCache(os.Getenv("TWINSLOT_CACHE"), os.Getenv("HOME"))}
	code := env.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
