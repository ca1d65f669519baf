package omaha

// Canonical, ReadTestdata and TestHost let the external test package (interop_*_test.go)
// share the helpers of golden_test.go and client_test.go.
var (
	Canonical    = canonical
	ReadTestdata = readTestdata
	TestHost     = testHost
)
