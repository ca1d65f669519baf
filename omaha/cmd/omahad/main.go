// Command omahad is the twinslot Omaha update server. See packages omahad (the command line)
// and server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	// Office hours name IANA time zones: embed the database so that a host without tzdata
	// installed still knows them.
	_ "time/tzdata"

	"github.com/twinslot/twinslot/omaha/omahad"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := omahad.Env{GOGC: os.Getenv("GOGC")}
	code := env.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
