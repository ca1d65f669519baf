// Command demo runs a whole twinslot rollout on this machine (package testimages/demo).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/testimages/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := demo.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
