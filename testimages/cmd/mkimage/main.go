// Command mkimage builds test disks and /usr images and emulates installs and boots; see
// package github.com/twinslot/twinslot/testimages/mkimage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/testimages/mkimage"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := mkimage.Env{Cache: mkimage.DefaultCache(os.Getenv("TWINSLOT_CACHE"), os.Getenv("HOME"))}
	code := env.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
