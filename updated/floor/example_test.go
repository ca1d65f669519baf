package floor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/updated/floor"
)

func ExampleMulti() {
	dir, _ := os.MkdirTemp("", "floor")
	defer os.RemoveAll(dir)
	ctx := context.TODO()
	// On a host with a TPM the agent uses floor.Multi{&floor.TPM{T: tpm}, file}.
	f := floor.Multi{floor.File{Path: filepath.Join(dir, "floor.json")}}
	f.Advance(ctx, 4)
	f.Advance(ctx, 2) // never lowers
	v, err := f.Get(ctx)
	fmt.Println(v, err)
	// Output: 4 <nil>
}
