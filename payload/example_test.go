package payload_test

import (
	"fmt"
	"path/filepath"

	"github.com/twinslot/twinslot/payload"
)

// Example shows how an update server checks an uploaded payload: Open, then Verify against its
// trust root, then read the signed version and board.
func Example() {
	trust, err := payload.LoadTrustRoot(filepath.Join("testdata", "trust.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	f, err := payload.OpenFile(filepath.Join("testdata", "v1.tsp"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	m, err := f.Verify(trust, payload.Expect{AppID: payload.DefaultAppID})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Version, m.Board, m.SecurityVersion, m.ImageSize)

	// A host expecting another board refuses it with a typed error.
	_, err = f.Verify(trust, payload.Expect{Board: "arm64-usr"})
	if reason, ok := payload.IsRejection(err); ok {
		fmt.Println("rejected:", reason)
	}
	// Output:
	// 0.0.1-golden amd64-usr 1 49152
	// rejected: wrong-board
}
