package demo_test

import (
	"context"
	"os"

	"github.com/twinslot/twinslot/testimages/demo"
)

// The demo with four hosts, two rebooting at once, its files kept in /tmp/twinslot-demo.
// (Compiled, not run: it takes seconds and prints timings.)
func ExampleMain() {
	code := demo.Main(context.TODO(), []string{"--hosts", "4", "--max", "2", "--dir", "/tmp/twinslot-demo"}, os.Stdin, os.Stdout, os.Stderr)
	os.Exit(code)
}
