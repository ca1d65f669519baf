package payload

import "testing"

// SetBgSyncEvery makes Install sync the target in the background every n bytes written, for
// the rest of test t (which must not run in parallel with other installs).
func SetBgSyncEvery(t testing.TB, n int64) {
	old := bgSyncEvery
	bgSyncEvery = n
	t.Cleanup(func() { bgSyncEvery = old })
}
