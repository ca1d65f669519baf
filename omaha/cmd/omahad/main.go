// Command omahad is the twinslot Omaha update server. See package server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/omaha/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := server.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
