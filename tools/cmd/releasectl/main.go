// Command releasectl publishes, promotes and steers twinslot releases on an omahad server.
// See tools/releasectl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/twinslot/twinslot/tools/releasectl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := releasectl.Env{Server: os.Getenv("RELEASECTL_SERVER"), Token: os.Getenv("RELEASECTL_TOKEN")}
	code := env.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
