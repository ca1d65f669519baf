// Command payload builds, signs, verifies, inspects and applies twinslot update payloads.
// See tools/payloadcmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twinslot/twinslot/tools/payloadcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := payloadcmd.Env{Now: time.Now, Host: os.DirFS("/"), ESPDir: "/boot"}
	code := env.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
