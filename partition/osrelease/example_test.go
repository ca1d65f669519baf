package osrelease_test

import (
	"fmt"

	"github.com/twinslot/twinslot/partition/osrelease"
)

func ExampleParse() {
	r, err := osrelease.Parse([]byte(`NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
VERSION=4081.2.0
VERSION_ID=4081.2.0
BUILD_ID=2024-12-03-1830
FLATCAR_BOARD="amd64-usr"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.ID, r.Version, r.Board)
	_, err = osrelease.Parse([]byte("ID=ubuntu\nVERSION_ID=\"22.04\"\n"))
	fmt.Println(err)
	// Output:
	// flatcar 4081.2.0 amd64-usr
	// os-release: BOARD or FLATCAR_BOARD is empty (or missing)
}
