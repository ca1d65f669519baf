package releasectl_test

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPublishFlatcar: an app without a trust root, a Flatcar payload uploaded with an OEM
// extra, an external one, the group's backoff switch, and the usage and refusal errors.
func TestPublishFlatcar(t *testing.T) {
	f := newFixture(t)
	out := f.ok(t, "app", "create", "--id", omahatest.FlatcarAppID, "--name", "flatcar")
	if !strings.Contains(out, "created app flatcar") {
		t.Fatalf("app create without --trust: %q", out)
	}
	f.s.App = omahatest.FlatcarAppID
	payload := writeFile(t, "flatcar_production_update.gz", omahatest.FlatcarPayload(128<<10, 7))
	oem := writeFile(t, "oem-azure.gz", []byte("oem sysext"))

	out = f.ok(t, "publish", "--version", "4152.2.0", "--channel", "stable", "--flatcar", payload, "--extra", oem)
	if !regexp.MustCompile(`^published Flatcar 4152\.2\.0 for amd64-usr \(128\.0 KiB, sha256 [0-9a-f]{64}, 1 extra file\(s\)\) to stable\n$`).MatchString(out) {
		t.Fatalf("publish --flatcar: %q", out)
	}
	u := f.s.Host(t, "stable", "4081.2.0").Check(t)
	if u == nil || u.Version != "4152.2.0" || u.PackageName != "flatcar_production_update.gz" || len(u.Extras) != 1 || u.Extras[0].Name != "oem-azure.gz" {
		t.Fatalf("offer = %+v", u)
	}

	ext := omahatest.FlatcarPayload(64<<10, 8)
	s256, s1 := sha256.Sum256(ext), sha1.Sum(ext)
	out = f.ok(t, "publish", "--json", "--version", "4152.2.1", "--board", "arm64-usr", "--channel", "beta",
		"--url", "https://mirror.example/arm64-usr/4152.2.1/flatcar_production_update.gz", "--size", strconv.Itoa(len(ext)),
		"--sha256", hex.EncodeToString(s256[:]), "--sha1", base64.StdEncoding.EncodeToString(s1[:]), "--extra", oem)
	var p admin.Package
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Format != admin.FormatFlatcar || p.Board != "arm64-usr" ||
		!strings.HasPrefix(p.URL, "https://mirror.example/") || len(p.Extras) != 1 || p.Extras[0].Size != 10 {
		t.Fatalf("publish --url --json: %v %q", err, out)
	}

	out = f.ok(t, "packages", "--app", omahatest.FlatcarAppID)
	if !strings.Contains(out, "flatcar, 1 extra") {
		t.Fatalf("packages: %q", out)
	}
	out = f.ok(t, "group", "update", "--app", omahatest.FlatcarAppID, "stable", "--disable-payload-backoff")
	if !strings.Contains(out, "no payload backoff") {
		t.Fatalf("group update --disable-payload-backoff: %q", out)
	}

	gz := writeFile(t, "flatcar_production_update.gz", append([]byte{0x1f, 0x8b, 8, 0}, make([]byte, 100)...))
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no version", []string{"publish", "--flatcar", payload}, 2, "--version is required"},
		{"file as argument too", []string{"publish", "--version", "1.0.0", "--flatcar", payload, payload}, 2, "not as an argument"},
		{"upload and url", []string{"publish", "--version", "1.0.0", "--flatcar", payload, "--url", "https://x/y.gz"}, 2, "do not combine"},
		{"external without sha1", []string{"publish", "--version", "1.0.0", "--url", "https://x/y.gz", "--size", "5", "--sha256", "ab"}, 2, "--sha1"},
		{"version for a twinslot payload", []string{"publish", "--version", "1.0.0", payload}, 2, "for Flatcar payloads"},
		{"gzip instead of the payload", []string{"publish", "--version", "4152.2.2", "--flatcar", gz}, 1, `refused the payload: not an update_engine payload`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := f.run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", code, errs, tc.code, tc.msg)
			}
		})
	}
}
