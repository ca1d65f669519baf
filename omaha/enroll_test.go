package omaha_test

import (
	"testing"

	"github.com/twinslot/twinslot/omaha"
)

func TestEnrollURL(t *testing.T) {
	for _, tc := range []struct{ server, want string }{
		{"not a url", ""},
		{"ftp://x/v1/update/", ""},
		{"http://127.0.0.1:8080/v1/update/", "http://127.0.0.1:8080/v1/enroll"},
		{"http://127.0.0.1:8080/v1/update", "http://127.0.0.1:8080/v1/enroll"},
		{"https://omaha.example/prefix/v1/update/", "https://omaha.example/prefix/v1/enroll"},
	} {
		got, err := omaha.EnrollURL(tc.server)
		if (err != nil) != (tc.want == "") || got != tc.want {
			t.Errorf("EnrollURL(%q) = %q, %v; want %q", tc.server, got, err, tc.want)
		}
	}
}
