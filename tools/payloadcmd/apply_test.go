package payloadcmd_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
)

const testDiskSize = testimages.MinDiskSize

// host is a test disk whose USR-A runs base, plus a signed payload of a newer build.
type host struct {
	dir, disk, trust, payload string
	unsigned                  string // payload of newer, not signed
	key                       *payloadtest.Key
	base, newer               string
}

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// images builds the base and the newer /usr image once per test binary.
func images(t *testing.T) (base, newer string) {
	t.Helper()
	imagesOnce.Do(func() {
		imagesDir, imagesErr = os.MkdirTemp("", "payloadcmd-images")
		if imagesErr != nil {
			return
		}
		slot := testimages.SlotSize(testDiskSize)
		base, newer := filepath.Join(imagesDir, "base.img"), filepath.Join(imagesDir, "newer.img")
		if imagesErr = testimages.BuildUsr(t.Context(), base, testimages.UsrOptions{Version: "1.0.0", Size: slot}); imagesErr != nil {
			return
		}
		imagesErr = testimages.BuildUsr(t.Context(), newer, testimages.UsrOptions{Version: "1.1.0", Base: base, Change: 0.05})
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return filepath.Join(imagesDir, "base.img"), filepath.Join(imagesDir, "newer.img")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

func newHost(t *testing.T) *host {
	t.Helper()
	base, newer := images(t)
	h := &host{dir: t.TempDir(), base: base, newer: newer, key: payloadtest.NewKey(t, "")}
	h.disk = filepath.Join(h.dir, "disk.img")
	if err := testimages.BuildDisk(t.Context(), h.disk, testimages.DiskOptions{Size: testDiskSize, Usr: base}); err != nil {
		t.Fatal(err)
	}
	h.trust = payloadtest.WriteTrustRoot(t, h.dir, payloadtest.TrustRoot(t, 1, 2, h.key))
	h.unsigned = filepath.Join(h.dir, "unsigned.tsp")
	o := payloadtest.Options("1.1.0")
	o.SecurityVersion = 2
	payloadtest.BuildFile(t, newer, h.unsigned, o)
	h.payload = h.derive(t, "p", newer, nil, nil, h.key)
	return h
}

// regions hashes what must never change on a bad input: both GPT copies and the active slot.
func (h *host) regions(t *testing.T) map[string][32]byte {
	t.Helper()
	f, err := os.Open(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, err := d.SlotByLabel("USR-A")
	if err != nil {
		t.Fatal(err)
	}
	sum := func(off, n int64) [32]byte {
		hs := sha256.New()
		if _, err := io.Copy(hs, io.NewSectionReader(f, off, n)); err != nil {
			t.Fatal(err)
		}
		var s [32]byte
		copy(s[:], hs.Sum(nil))
		return s
	}
	return map[string][32]byte{
		"primary GPT": sum(0, 34*512),
		"backup GPT":  sum(st.Size()-33*512, 33*512),
		"USR-A":       sum(a.Start, a.Size),
		"whole disk":  sum(0, st.Size()),
	}
}

// derive copies the host's unsigned payload source image into a new payload built with edit
// applied to the options and signed by keys, then lets mangle change its bytes.
func (h *host) derive(t *testing.T, name, image string, edit func(*payload.BuildOptions), mangle func([]byte) []byte, keys ...*payloadtest.Key) string {
	t.Helper()
	o := payloadtest.Options("1.1.0")
	o.SecurityVersion = 2
	if edit != nil {
		edit(&o)
	}
	p := filepath.Join(h.dir, name+".tsp")
	if edit == nil && image == h.newer {
		b, err := os.ReadFile(h.unsigned) // same build: copy it rather than build again
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		payloadtest.Sign(t, p, keys...)
	} else {
		payloadtest.BuildFile(t, image, p, o, keys...)
	}
	if mangle != nil {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, mangle(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestApply(t *testing.T) {
	h := newHost(t)
	r := mustRun(t, "apply", "--trust", h.trust, "--disk", h.disk, h.payload)
	if !strings.Contains(r.stdout, "installed 1.1.0 (amd64-usr) into USR-B") || !strings.Contains(r.stdout, "from USR-A") {
		t.Fatalf("apply output: %s", r.stdout)
	}
	slot, rel, err := testimages.Boot(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	if slot.Label != "USR-B" || rel.Version != "1.1.0" {
		t.Fatalf("booted %s %+v", slot.Label, rel)
	}
	// The slot holds exactly the image.
	want, _ := os.ReadFile(h.newer)
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, _ := d.SlotByLabel("USR-B")
	got := make([]byte, len(want))
	if _, err := d.SlotReader(b).ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("USR-B differs from the image")
	}
}

func TestApplyDeltaOverHTTPAndRepeat(t *testing.T) {
	h := newHost(t)
	data, _ := os.ReadFile(h.payload)
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		http.ServeContent(w, r, "p.tsp", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	r := mustRun(t, "apply", "--json", "--trust", h.trust, "--disk", h.disk, srv.URL+"/p.tsp")
	var res struct {
		Target                     string
		ImageBytes                 int64
		ReusedActiveBytes          int64
		ReusedTargetBytes          int64
		FetchedBytes, WrittenBytes int64
		Requests                   int64
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	// USR-B was empty: nothing in it is "reused" (its zeros are zeroBytes), and every request
	// the server answered is counted, the envelope's included.
	if res.Target != "USR-B" || res.ReusedActiveBytes < res.ImageBytes/2 || res.FetchedBytes > int64(len(data))/3 ||
		res.ReusedTargetBytes != 0 || res.Requests != served.Load() {
		t.Fatalf("delta over http: %+v (payload %d bytes, %d requests served)", res, len(data), served.Load())
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		if k == "" || k[0] < 'a' || k[0] > 'z' {
			t.Errorf("JSON key %q is not lowerCamel", k)
		}
	}
	if _, ok := keys["seconds"]; !ok {
		t.Errorf("no seconds in %s", r.stdout)
	}
	// Applying again (USR-B not yet booted, USR-A still active) finds everything in place.
	r = mustRun(t, "apply", "--json", "--trust", h.trust, "--disk", h.disk, srv.URL+"/p.tsp")
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.FetchedBytes != 0 || res.WrittenBytes != 0 {
		t.Fatalf("repeat apply did work: %+v", res)
	}
}

// TestApplyBadInput proves every refusal exits 1 with its reason and leaves both GPT copies and
// the active slot byte-identical (and, for refusals before data, the whole disk).
func TestApplyBadInput(t *testing.T) {
	h := newHost(t)
	stranger := payloadtest.NewKey(t, "")
	revokedTrust := payloadtest.TrustRoot(t, 1, 0, h.key, stranger)
	revokedTrust.Revoke(h.key.ID)
	revokedDir := t.TempDir()
	revokedPath := payloadtest.WriteTrustRoot(t, revokedDir, revokedTrust)
	twoDir := t.TempDir()
	twoPath := payloadtest.WriteTrustRoot(t, twoDir, payloadtest.TrustRoot(t, 2, 0, h.key, stranger))
	big := filepath.Join(h.dir, "big.img")
	if err := os.WriteFile(big, payloadtest.Image(int(testimages.SlotSize(testDiskSize))+(1<<20), 5), 0o644); err != nil {
		t.Fatal(err)
	}
	flipLastTableByte := func(b []byte) []byte { b[len(b)-1] ^= 1; return b }
	corruptData := func(b []byte) []byte {
		f, err := payload.Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		m, err := f.Verify(payloadtest.TrustRoot(t, 1, 0, h.key), payload.Expect{})
		if err != nil {
			t.Fatal(err)
		}
		// Corrupt every stored chunk: whichever the host has to fetch is bad.
		start := int64(len(b)) - m.TableSize - m.DataSize
		for _, c := range m.Chunks {
			if c.DataLength > 0 {
				b[start+c.DataOffset+int64(c.DataLength)/2] ^= 0xff
			}
		}
		return b
	}
	file, _ := os.ReadFile(h.payload)
	serve := func(mw func(w http.ResponseWriter, r *http.Request) bool) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if mw(w, r) {
				return
			}
			http.ServeContent(w, r, "p.tsp", time.Time{}, bytes.NewReader(file))
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/p.tsp"
	}
	tests := []struct {
		name      string
		args      func() []string
		want      string
		wholeDisk bool // refused before data: not a single byte of the disk may change
	}{
		{"unsigned", func() []string { return []string{"--trust", h.trust, h.derive(t, "unsigned", h.newer, nil, nil)} }, "no-signature", true},
		{"invalid signature", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "badsig", h.newer, nil, func(b []byte) []byte {
				i := bytes.Index(b, []byte(`"sig":"`)) + 10
				b[i] ^= 'A' ^ 'B'
				return b
			}, h.key)}
		}, "signature", true},
		{"unknown key", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "stranger", h.newer, nil, nil, stranger)}
		}, "unknown-key", true},
		{"revoked key", func() []string { return []string{"--trust", revokedPath, h.payload} }, "revoked-key", true},
		{"below threshold", func() []string { return []string{"--trust", twoPath, h.payload} }, "below-threshold", true},
		{"wrong board", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "arm", h.newer, func(o *payload.BuildOptions) { o.Board = "arm64-usr" }, nil, h.key)}
		}, "wrong-board", true},
		{"wrong app", func() []string {
			return []string{"--trust", h.trust, "--app", "e96281a6-d1af-4bde-9a0a-97b76e56dc57", h.payload}
		}, "wrong-app", true},
		{"security version below the floor", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "old", h.newer, func(o *payload.BuildOptions) { o.SecurityVersion = 1 }, nil, h.key)}
		}, "security-version", true},
		{"truncated", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "trunc", h.newer, nil, func(b []byte) []byte { return b[:len(b)-100] }, h.key)}
		}, "truncated", true},
		{"header length overflow", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "ovf", h.newer, nil, func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[24:], 1<<62)
				return b
			}, h.key)}
		}, "length-overflow", true},
		{"chunk table tampered", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "table", h.newer, nil, flipLastTableByte, h.key)}
		}, "chunk-table-hash", true},
		{"image larger than the slot", func() []string { return []string{"--trust", h.trust, h.derive(t, "big", big, nil, nil, h.key)} }, "image-too-large", true},
		{"server ignores Range", func() []string {
			return []string{"--trust", h.trust, serve(func(w http.ResponseWriter, r *http.Request) bool { r.Header.Del("Range"); return false })}
		}, "range-ignored", true},
		{"server answers the wrong Content-Range", func() []string {
			return []string{"--trust", h.trust, serve(func(w http.ResponseWriter, r *http.Request) bool {
				var a, b int64
				fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a+1, b+1, len(file)))
				w.WriteHeader(http.StatusPartialContent)
				w.Write(file[a+1 : b+2])
				return true
			})}
		}, "wrong-content-range", true},
		{"chunk hash mismatch", func() []string {
			return []string{"--trust", h.trust, h.derive(t, "data", h.newer, nil, corruptData, h.key)}
		}, "chunk-hash", false},
		{"not a payload", func() []string {
			p := filepath.Join(h.dir, "junk.tsp")
			os.WriteFile(p, bytes.Repeat([]byte("junk"), 100), 0o644)
			return []string{"--trust", h.trust, p}
		}, "malformed", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args()
			before := h.regions(t)
			r := run(t, append([]string{"apply", "--disk", h.disk}, args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 mentioning %q", r.code, r.stderr, tc.want)
			}
			after := h.regions(t)
			for k, v := range before {
				if k == "whole disk" && !tc.wholeDisk {
					continue
				}
				if after[k] != v {
					t.Errorf("%s changed", k)
				}
			}
		})
	}
}

func TestApplyRefusesDiskWithoutActiveSlot(t *testing.T) {
	h := newHost(t)
	d, err := partition.Open(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.SlotByLabel("USR-A")
	// Make USR-A look like a fresh, never-booted install: no slot is successful.
	if err := d.PrepareInstall(a); err != nil {
		t.Fatal(err)
	}
	d.Close()
	r := run(t, "apply", "--trust", h.trust, "--disk", h.disk, h.payload)
	if r.code != 1 || !strings.Contains(r.stderr, "active slot") {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
}

// TestApplyDeltaSection builds a payload with a delta section from the base ('build
// --delta-from', the base's version read from its os-release) and applies it over HTTP to a
// host running the base: it fetches only the section, counts every request, and a repeat does
// nothing; --no-delta takes the chunk path.
func TestApplyDeltaSection(t *testing.T) {
	h := newHost(t)
	keyPath, _ := h.key.WriteFiles(t, h.dir, "k")
	p := filepath.Join(h.dir, "delta.tsp")
	r := mustRun(t, "build", "--image", h.newer, "--version", "1.1.0", "--board", "amd64-usr", "--security-version", "2",
		"--delta-from", h.base, "--delta-level", "default", "-o", p)
	if !strings.Contains(r.stdout, "delta section from 1.0.0") {
		t.Fatalf("build output: %s", r.stdout)
	}
	mustRun(t, "sign", "--key", keyPath, p)
	data, _ := os.ReadFile(p)
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		http.ServeContent(w, r, "p.tsp", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	type result struct {
		Delta, DeltaFallback                      string
		FetchedBytes, MetadataBytes, WrittenBytes int64
		Requests                                  int64
	}
	apply := func(args ...string) result {
		t.Helper()
		r := mustRun(t, append(append([]string{"apply", "--json", "--trust", h.trust, "--disk", h.disk}, args...), srv.URL+"/p.tsp")...)
		var res result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	before := served.Load()
	res := apply()
	if res.Delta != "1.0.0" || res.DeltaFallback != "" || res.Requests != served.Load()-before {
		t.Fatalf("delta apply: %+v (%d requests served)", res, served.Load()-before)
	}
	want, _ := os.ReadFile(h.newer)
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := d.SlotByLabel("USR-B")
	got := make([]byte, len(want))
	if _, err := d.SlotReader(b).ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !bytes.Equal(got, want) {
		t.Fatal("USR-B differs from the image")
	}
	if again := apply(); again.Delta != "1.0.0" || again.FetchedBytes != 0 || again.WrittenBytes != 0 {
		t.Fatalf("repeat delta apply did work: %+v", again)
	}
	// The chunk path over the same payload (everything now in place) still reads the chunk
	// table: more than the whole delta install fetched.
	chunks := apply("--no-delta")
	if chunks.Delta != "" || chunks.FetchedBytes+chunks.MetadataBytes <= res.FetchedBytes+res.MetadataBytes {
		t.Fatalf("--no-delta %+v against delta %+v", chunks, res)
	}
	t.Logf("delta fetched %d + %d metadata in %d requests; chunks %d + %d", res.FetchedBytes, res.MetadataBytes, res.Requests,
		chunks.FetchedBytes, chunks.MetadataBytes)
}
