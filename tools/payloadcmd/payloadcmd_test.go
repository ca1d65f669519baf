package payloadcmd_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature/kms/fake"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/tools/payloadcmd"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := payloadcmd.Env{Now: func() time.Time { return time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) }}
	code := env.Main(t.Context(), args, strings.NewReader(""), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, args...)
	if r.code != 0 {
		t.Fatalf("payload %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestReleaseFlow walks keygen → trust init → build → sign → verify → inspect as a release
// engineer would, including a rotation to a second key.
func TestReleaseFlow(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	img := at("usr.img")
	if err := os.WriteFile(img, payloadtest.Image(2<<20, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "keygen", "-o", at("old"))
	mustRun(t, "keygen", "-o", at("new"), "--type", "ed25519")
	if st, err := os.Stat(at("old.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("old.key: %v %v", st.Mode(), err)
	}
	if r := run(t, "keygen", "-o", at("old")); r.code != 1 || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("keygen over an existing key: %+v", r)
	}
	mustRun(t, "trust", "init", "--key", at("old.pub"), "-o", at("trust-old.json"))
	mustRun(t, "trust", "init", "--key", at("old.pub"), "--key", at("new.pub"), "--threshold", "2", "--floor", "3", "-o", at("trust-both.json"))
	r := mustRun(t, "build", "--image", img, "--version", "1.2.3", "--board", "amd64-usr", "--security-version", "4", "-o", at("p.tsp"))
	if !strings.Contains(r.stdout, "unsigned") {
		t.Fatalf("build output: %s", r.stdout)
	}
	if r := run(t, "verify", "--trust", at("trust-old.json"), at("p.tsp")); r.code != 1 || !strings.Contains(r.stderr, "no-signature") {
		t.Fatalf("verify unsigned: %+v", r)
	}
	mustRun(t, "sign", "--key", at("old.key"), at("p.tsp"))
	mustRun(t, "verify", "--trust", at("trust-old.json"), "--board", "amd64-usr", at("p.tsp"))
	if r := run(t, "verify", "--trust", at("trust-both.json"), at("p.tsp")); r.code != 1 || !strings.Contains(r.stderr, "below-threshold") {
		t.Fatalf("verify one of two: %+v", r)
	}
	mustRun(t, "sign", "--key", at("new.key"), at("p.tsp"))
	r = mustRun(t, "verify", "--trust", at("trust-both.json"), "--json", at("p.tsp"))
	var j struct {
		Version    string
		Board      string
		Verified   bool
		Signatures []string
		ChunkCount int
		Encodings  *struct{ Zero, Raw, Zstd int }
	}
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || !j.Verified || j.Version != "1.2.3" || len(j.Signatures) != 2 {
		t.Fatalf("verify --json: %v %+v\n%s", err, j, r.stdout)
	}
	if e := j.Encodings; e == nil || e.Zero+e.Raw+e.Zstd != j.ChunkCount || j.ChunkCount == 0 {
		t.Fatalf("verify --json: encodings %+v do not count the %d chunks", e, j.ChunkCount)
	}
	if r := run(t, "verify", "--trust", at("trust-old.json"), "--board", "arm64-usr", at("p.tsp")); r.code != 1 || !strings.Contains(r.stderr, "wrong-board") {
		t.Fatalf("verify wrong board: %+v", r)
	}
	r = mustRun(t, "inspect", at("p.tsp"))
	if !strings.Contains(r.stdout, "UNVERIFIED") || !strings.Contains(r.stdout, "1.2.3") {
		t.Fatalf("inspect: %s", r.stdout)
	}
	r = mustRun(t, "inspect", "--json", at("p.tsp"))
	var m payload.Manifest
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.SecurityVersion != 4 || m.Created.Year() != 2026 {
		t.Fatalf("inspect --json: %v %+v", err, m)
	}
	// inspect reads no chunk table, so it must not claim zero chunks of every encoding.
	if strings.Contains(r.stdout, `"encodings"`) {
		t.Fatalf("inspect --json prints encodings it did not count:\n%s", r.stdout)
	}
}

// TestTrustInitRevokeUpperCase: 'trust init --revoke ID' with the id in upper case revokes the
// key: a payload signed only by it is refused.
func TestTrustInitRevokeUpperCase(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(at("usr.img"), payloadtest.Image(1<<20, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, "keygen", "-o", at("old"))
	m := regexp.MustCompile(`key id ([0-9a-f]{64})`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("keygen printed no key id: %s", r.stdout)
	}
	mustRun(t, "keygen", "-o", at("new"))
	mustRun(t, "trust", "init", "--key", at("old.pub"), "--key", at("new.pub"), "--revoke", strings.ToUpper(m[1]), "-o", at("trust.json"))
	mustRun(t, "build", "--image", at("usr.img"), "--version", "1.0.0", "--board", "amd64-usr", "-o", at("p.tsp"))
	mustRun(t, "sign", "--key", at("old.key"), at("p.tsp"))
	if r := run(t, "verify", "--trust", at("trust.json"), at("p.tsp")); r.code != 1 || !strings.Contains(r.stderr, "revoked") {
		t.Fatalf("verify a payload signed only by the key revoked in upper case: %+v", r)
	}
}

func TestBadInputLeavesFilesAlone(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	junk := at("junk.tsp")
	if err := os.WriteFile(junk, []byte("this is not a payload at all, not even close......"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "keygen", "-o", at("k"))
	mustRun(t, "trust", "init", "--key", at("k.pub"), "-o", at("trust.json"))
	before := fileSum(t, junk)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"sign junk", []string{"sign", "--key", at("k.key"), junk}, 1, "malformed"},
		{"verify junk", []string{"verify", "--trust", at("trust.json"), junk}, 1, "malformed"},
		{"inspect junk", []string{"inspect", junk}, 1, "malformed"},
		{"sign with a public key", []string{"sign", "--key", at("k.pub"), junk}, 1, "private key"},
		{"verify with a bad trust root", []string{"verify", "--trust", at("k.pub"), junk}, 1, "trust root"},
		{"build without version", []string{"build", "--image", junk, "--board", "b", "-o", at("x")}, 2, "required"},
		{"build bad chunking", []string{"build", "--image", junk, "--version", "1", "--board", "b", "--chunking", "magic", "-o", at("x")}, 2, "chunking"},
		{"trust init threshold too high", []string{"trust", "init", "--key", at("k.pub"), "--threshold", "2", "-o", at("t2.json")}, 1, "threshold"},
		{"trust init revoke not hex", []string{"trust", "init", "--key", at("k.pub"), "--revoke", strings.Repeat("z", 64), "-o", at("t3.json")}, 1, "hex"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d stderr %q; want exit %d containing %q", r.code, r.stderr, tc.code, tc.want)
			}
		})
	}
	if fileSum(t, junk) != before {
		t.Fatal("junk payload was modified")
	}
	for _, n := range []string{"x", "t2.json", "t3.json"} {
		if _, err := os.Stat(at(n)); err == nil {
			t.Errorf("%s was written on bad input", n)
		}
	}
}

// TestBuildDeltaFromUnreadable: a --delta-from image that cannot be opened or has no version is
// an error naming the flag (not a panic), whether or not other bases were opened before it, and
// no payload is written.
func TestBuildDeltaFromUnreadable(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(at("usr.img"), payloadtest.Image(1<<20, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		bases []string
		code  int
		want  string
	}{
		{"missing", []string{at("missing.img")}, 1, "--delta-from"},
		{"missing after an opened one", []string{at("usr.img") + "=1.0.0", at("missing.img")}, 1, "--delta-from"},
		{"no version", []string{at("usr.img") + "=1.0.0", at("usr.img")}, 2, "no version given"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("payload build --delta-from panicked: %v", p)
				}
			}()
			args := []string{"build", "--image", at("usr.img"), "--version", "2.0.0", "--board", "amd64-usr", "-o", at("p.tsp")}
			for _, b := range tc.bases {
				args = append(args, "--delta-from", b)
			}
			before := openFiles()
			r := run(t, args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d stderr %q; want exit %d containing %q", r.code, r.stderr, tc.code, tc.want)
			}
			if after := openFiles(); after != before {
				t.Errorf("%d files open after the failed build, %d before: the opened bases were not closed", after, before)
			}
			if _, err := os.Stat(at("p.tsp")); err == nil {
				t.Fatal("p.tsp was written")
			}
		})
	}
}

// openFiles counts the test process's open file descriptors (-1 where /proc is missing).
func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func TestHelpEverywhere(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"keygen", "--help"}, {"trust", "init", "--help"}, {"build", "--help"},
		{"sign", "--help"}, {"verify", "--help"}, {"inspect", "--help"}} {
		r := run(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
}

// TestSignWithKMS signs through sigstore's KMS registry (its in-tree fake provider stands in for
// awskms://, gcpkms://… which register the same way).
func TestSignWithKMS(t *testing.T) {
	dir := t.TempDir()
	at := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(at("usr.img"), payloadtest.Image(1<<20, 4), 0o644); err != nil {
		t.Fatal(err)
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(at("kms.pub"), pub, 0o644)
	mustRun(t, "trust", "init", "--key", at("kms.pub"), "-o", at("trust.json"))
	mustRun(t, "build", "--image", at("usr.img"), "--version", "1", "--board", "amd64-usr", "-o", at("p.tsp"))
	ctx := context.WithValue(t.Context(), fake.KmsCtxKey{}, crypto.PrivateKey(priv))
	var out, errb bytes.Buffer
	if code := (payloadcmd.Env{Now: time.Now}).Main(ctx, []string{"sign", "--key", "fakekms://release", at("p.tsp")}, nil, &out, &errb); code != 0 {
		t.Fatalf("sign with KMS: exit %d: %s", code, errb.String())
	}
	mustRun(t, "verify", "--trust", at("trust.json"), at("p.tsp"))
	if r := run(t, "sign", "--key", "nosuchkms://x", at("p.tsp")); r.code != 1 || !strings.Contains(r.stderr, "nosuchkms") {
		t.Fatalf("unknown KMS: %+v", r)
	}
}

// TestKeygenForce: keygen --force replaces a regular NAME.key and NAME.pub with a matching pair
// and leaves no temporary file; when either path is a directory it refuses before writing
// anything, so the old private key survives, and the error does not ask for the --force given.
func TestKeygenForce(t *testing.T) {
	t.Run("replaces both", func(t *testing.T) {
		dir := t.TempDir()
		name := filepath.Join(dir, "k")
		mustRun(t, "keygen", "-o", name)
		old := fileSum(t, name+".key")
		r := mustRun(t, "keygen", "--force", "-o", name)
		if fileSum(t, name+".key") == old {
			t.Fatal("k.key was not replaced")
		}
		pub, err := os.ReadFile(name + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		tk, err := payload.NewTrustedKey(pub)
		if err != nil || !strings.Contains(r.stdout, "key id "+tk.ID) {
			t.Fatalf("k.pub (id %s, %v) is not the key keygen printed: %s", tk.ID, err, r.stdout)
		}
		if st, err := os.Stat(name + ".key"); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("k.key: %v %v", st.Mode(), err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Fatalf("files after keygen --force: %v", ents)
		}
	})
	for _, ext := range []string{".pub", ".key"} {
		t.Run(ext+" is a directory", func(t *testing.T) {
			dir := t.TempDir()
			name := filepath.Join(dir, "k")
			mustRun(t, "keygen", "-o", name)
			sums := map[string][32]byte{}
			for _, e := range []string{".key", ".pub"} {
				sums[e] = fileSum(t, name+e)
			}
			if err := os.Remove(name + ext); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(name+ext, 0o755); err != nil {
				t.Fatal(err)
			}
			r := run(t, "keygen", "--force", "-o", name)
			if r.code == 0 {
				t.Fatalf("keygen --force wrote over a directory at k%s", ext)
			}
			for e, sum := range sums {
				if e != ext && fileSum(t, name+e) != sum {
					t.Fatalf("keygen failed (%s) but replaced k%s", strings.TrimSpace(r.stderr), e)
				}
			}
			if r.code != 1 || !strings.Contains(r.stderr, "is a directory") || strings.Contains(r.stderr, "use --force") {
				t.Fatalf("keygen --force with a directory at k%s: %+v", ext, r)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 2 {
				t.Fatalf("files after the refusal: %v", ents)
			}
		})
	}
}

// TestKeygenRefusesSymlinks: keygen --force does not write a key through a symbolic link at
// NAME.key or NAME.pub (it would overwrite whatever the link points at), and changes nothing.
func TestKeygenRefusesSymlinks(t *testing.T) {
	for _, link := range []string{".key", ".pub"} {
		t.Run(link, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(dir, "k")
			if err := os.Symlink(victim, name+link); err != nil {
				t.Fatal(err)
			}
			r := run(t, "keygen", "-o", name, "--force")
			if r.code != 1 || !strings.Contains(r.stderr, "symbolic link") {
				t.Fatalf("keygen --force over a symlink: %+v", r)
			}
			if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
				t.Fatalf("the link's target was overwritten: %q", b)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 2 {
				t.Fatalf("files after the refusal: %v", ents)
			}
		})
	}
}

// TestSignThroughSymlink: 'payload sign LINK' signs the payload the symbolic link points at and
// keeps the link, instead of replacing the link with a signed copy and leaving the target
// unsigned.
func TestSignThroughSymlink(t *testing.T) {
	tests := []struct {
		name   string
		link   string // relative to the test directory
		target string // as stored in the link
	}{
		{"absolute", "latest.tsp", ""},
		{"relative, from another directory", "channel/stable.tsp", "../p.tsp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			at := func(n string) string { return filepath.Join(dir, n) }
			if err := os.WriteFile(at("usr.img"), payloadtest.Image(1<<20, 5), 0o644); err != nil {
				t.Fatal(err)
			}
			mustRun(t, "keygen", "-o", at("k"))
			mustRun(t, "trust", "init", "--key", at("k.pub"), "-o", at("trust.json"))
			mustRun(t, "build", "--image", at("usr.img"), "--version", "1.0.0", "--board", "amd64-usr", "-o", at("p.tsp"))
			target := tc.target
			if target == "" {
				target = at("p.tsp")
			}
			link := at(tc.link)
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			mustRun(t, "sign", "--key", at("k.key"), link)
			if got, err := os.Readlink(link); err != nil || got != target {
				t.Fatalf("after sign, %s is no longer the link to %s: Readlink = %q, %v", tc.link, target, got, err)
			}
			mustRun(t, "verify", "--trust", at("trust.json"), at("p.tsp"))
		})
	}
}
