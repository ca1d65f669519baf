package mirror

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha"
)

// response is an upstream answer offering 4152.2.0: the payload and the given extra packages. The
// error is the omaha client's own refusal of the offer, which comes before the mirror's checks.
func response(t *testing.T, extras ...omaha.Package) (*omaha.CheckResult, error) {
	main := sha256.Sum256([]byte("payload"))
	one := sha1.Sum([]byte("payload"))
	uc := &omaha.UpdateCheck{Status: omaha.StatusOK, URLs: []omaha.URL{{Codebase: "http://127.0.0.1:9/a"}, {Codebase: "http://127.0.0.1:9/b/"}},
		Manifest: &omaha.Manifest{Version: "4152.2.0",
			Packages: append([]omaha.Package{{Name: "flatcar_production_update.gz", Size: 7, SHA256: hex.EncodeToString(main[:]), SHA1: base64.StdEncoding.EncodeToString(one[:])}}, extras...),
			Actions:  []omaha.Action{{Event: omaha.ActionPostinstall, SHA256: base64.StdEncoding.EncodeToString(main[:])}}}}
	u, err := uc.Update()
	if err != nil {
		return nil, err
	}
	app := &omaha.App{AppID: "{a4c4a3c6-6e0b-4b55-9a8e-2b1c2f0e6a10}", Status: omaha.StatusOK, UpdateCheck: uc}
	return &omaha.CheckResult{Update: u, Response: &omaha.Response{Apps: []*omaha.App{app}}}, nil
}

func TestOffer(t *testing.T) {
	m := testMirror(t)
	oem := sha256.Sum256([]byte("oem"))
	res, err := response(t, omaha.Package{Name: "oem-azure.gz", Size: 3, SHA256: base64.StdEncoding.EncodeToString(oem[:])})
	if err != nil {
		t.Fatal(err)
	}
	o, err := m.offer(m.pairs[0], res)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Files) != 2 || o.Files[1].SHA256 != oem || o.Files[1].SHA1 != [20]byte{} || o.Files[0].SHA1 == [20]byte{} {
		t.Fatalf("offer %+v", o)
	}
	if got := strings.Join(o.Files[1].URLs, " "); got != "http://127.0.0.1:9/a/oem-azure.gz http://127.0.0.1:9/b/oem-azure.gz" {
		t.Fatalf("extra URLs %s", got)
	}
	for _, tc := range []struct {
		name  string
		extra omaha.Package
		want  string
	}{
		{"name leaving the directory", omaha.Package{Name: "../../etc/passwd", Size: 3, SHA256: hex.EncodeToString(oem[:])}, "plain file name"},
		{"no sha256", omaha.Package{Name: "oem.gz", Size: 3}, "not a SHA-256"},
		{"no size", omaha.Package{Name: "oem.gz", SHA256: hex.EncodeToString(oem[:])}, "size 0"},
		{"same name twice", omaha.Package{Name: "flatcar_production_update.gz", Size: 3, SHA256: hex.EncodeToString(oem[:])}, "same name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := response(t, tc.extra)
			if err != nil {
				// The omaha client refuses some offers itself; the mirror then never sees them.
				if !errors.Is(err, omaha.ErrInvalidResponse) {
					t.Fatalf("the client refused the offer with %v, want an invalid-response error", err)
				}
				return
			}
			_, err = m.offer(m.pairs[0], res)
			var ue *UpstreamError
			if !errors.As(err, &ue) || ue.Transient || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an UpstreamError with %q, got %v", tc.want, err)
			}
		})
	}
}
