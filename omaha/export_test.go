package omaha

// Canonical and ReadTestdata let the external test package (interop_test.go) share the
// helpers of golden_test.go.
var (
	Canonical    = canonical
	ReadTestdata = readTestdata
)
