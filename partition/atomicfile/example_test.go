package atomicfile_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

func ExampleWriteFile() {
	dir, err := os.MkdirTemp("", "atomicfile")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "state.json")
	if err := atomicfile.WriteFile(p, []byte(`{"version":1}`), 0o600); err != nil {
		fmt.Println(err)
		return
	}
	b, _ := os.ReadFile(p)
	fmt.Println(string(b))
	// Output: {"version":1}
}
