package releasectl_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/twinslot/twinslot/tools/releasectl"
)

// ExampleEnv_Main shows where the server and token come from: Env (the binary fills it from
// RELEASECTL_SERVER and RELEASECTL_TOKEN), overridden by --server and --token.
func ExampleEnv_Main() {
	env := releasectl.Env{Server: "http://127.0.0.1:8080"} // no token
	var stderr strings.Builder
	code := env.Main(context.Background(), []string{"status"}, os.Stdin, os.Stdout, &stderr)
	fmt.Println(code)
	fmt.Print(stderr.String())
	// Output:
	// 2
	// releasectl status: no token: pass --token T or set RELEASECTL_TOKEN (create one with 'omahad token create')
	// Run 'releasectl --help' for usage.
}
