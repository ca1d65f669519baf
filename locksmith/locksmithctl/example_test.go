package locksmithctl_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/locksmith/locksmithctl"
)

func ExampleMain() {
	code := locksmithctl.Main(context.TODO(), []string{"set-max"}, os.Stdin, os.Stdout, os.Stdout)
	fmt.Println("exit", code)
	// Output:
	// locksmithctl set-max: missing N
	// Run 'locksmithctl --help' for usage.
	// exit 2
}
