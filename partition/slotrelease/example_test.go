package slotrelease_test

import (
	"fmt"

	"github.com/twinslot/twinslot/partition/slotrelease"
)

func ExampleFromOSRelease() {
	rel, err := slotrelease.FromOSRelease([]byte("ID=twinslot\nVERSION=\"1.0.1\"\nBOARD=amd64-usr\n"))
	fmt.Println(rel.Version, rel.Board, err)
	// Output: 1.0.1 amd64-usr <nil>
}
