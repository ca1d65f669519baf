package payload

import (
	"bytes"
	"strings"
	"testing"

	"github.com/restic/chunker"
)

// A reducible polynomial is refused every time, also after an irreducible one was accepted and
// remembered (the memo must not turn into "any polynomial passes").
func TestNewCutterRefusesReduciblePolynomial(t *testing.T) {
	good := DefaultChunking
	bad := DefaultChunking
	bad.Polynomial = DefaultPolynomial + 1 // no constant term: x divides it
	if chunker.Pol(bad.Polynomial).Irreducible() {
		t.Fatalf("test polynomial %#x is irreducible; pick another", bad.Polynomial)
	}
	for range 2 {
		if _, err := good.newCutter(bytes.NewReader(nil)); err != nil {
			t.Fatalf("default chunking: %v", err)
		}
		_, err := bad.newCutter(bytes.NewReader(nil))
		if err == nil || !strings.Contains(err.Error(), "not irreducible") {
			t.Fatalf("reducible polynomial %#x: err = %v, want \"not irreducible\"", bad.Polynomial, err)
		}
	}
}
