package locksmithd_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/locksmith/locksmithd"
)

func ExampleMain() {
	code := locksmithd.Main(context.TODO(), []string{"extra"}, os.Stdin, os.Stdout, os.Stdout)
	fmt.Println("exit", code)
	// Output:
	// locksmithd: too many arguments: extra (want no arguments)
	// Run 'locksmithd --help' for usage.
	// exit 2
}
