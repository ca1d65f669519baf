package benchpeers_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/testimages/benchpeers"
)

// Run the comparison on 256 MiB images and print the table (what make bench-peers does). It
// needs casync, zchunk and GNU time installed and a built payload binary.
func ExampleRun() {
	r, err := benchpeers.Run(context.Background(), benchpeers.Options{Dir: "bin/peers-data", Seed: 1, Payload: "bin/payload", Log: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	r.WriteTable(os.Stdout)
}
