package etcdtest_test

import (
	"testing"

	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

// A test starts a TLS-only server and uses its connected client; cleanup is automatic.
// (Compiled but not run: it needs the test's *testing.T.)
func ExampleNew() {
	var t *testing.T // the *testing.T of the test function
	e := etcdtest.New(t, etcdtest.WithTLS())
	if _, err := e.Client.Put(t.Context(), "key", "value"); err != nil {
		t.Fatal(err)
	}
	// e.Endpoints and e.CAFile are what a command-line client needs.
}
