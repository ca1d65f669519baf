package payload_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// fixture is one built payload with its keys.
type fixture struct {
	dir    string
	image  []byte
	path   string
	old    *payloadtest.Key
	new    *payloadtest.Key
	stray  *payloadtest.Key
	ed     *payloadtest.Key
	manif  *payload.Manifest
	opts   payload.BuildOptions
	rawLen int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.old = payloadtest.NewKey(t, payload.KeyECDSAP256)
	f.new = payloadtest.NewKey(t, payload.KeyECDSAP256)
	f.stray = payloadtest.NewKey(t, payload.KeyECDSAP256)
	f.ed = payloadtest.NewKey(t, payload.KeyEd25519)
	f.image = payloadtest.Image(3<<20+12345, 1)
	f.opts = payloadtest.Options("1.2.3")
	f.opts.SecurityVersion = 5
	f.path = filepath.Join(f.dir, "p.tsp")
	f.manif = payloadtest.BuildBytes(t, f.image, f.path, f.opts)
	st, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.rawLen = st.Size()
	return f
}

// variant copies the unsigned payload, signs it with keys and applies edit to the bytes.
func (f *fixture) variant(t *testing.T, name string, edit func([]byte) []byte, keys ...*payloadtest.Key) string {
	t.Helper()
	b, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(f.dir, name+".tsp")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	payloadtest.Sign(t, p, keys...)
	if edit != nil {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, edit(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func verifyPath(p string, tr *payload.TrustRoot, want payload.Expect) (*payload.Manifest, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	f, err := payload.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, err
	}
	return f.Verify(tr, want)
}

// envelopeEdit rewrites the envelope JSON in place (keeping the area) with fn.
func envelopeEdit(fn func(env map[string]any)) func([]byte) []byte {
	return func(b []byte) []byte {
		n := binary.BigEndian.Uint32(b[12:])
		area := binary.BigEndian.Uint32(b[16:])
		var env map[string]any
		if err := json.Unmarshal(b[payload.HeaderSize:payload.HeaderSize+n], &env); err != nil {
			panic(err)
		}
		fn(env)
		nb, _ := json.Marshal(env)
		if uint32(len(nb)) > area {
			panic("envelope grew past its area")
		}
		out := bytes.Clone(b)
		clear(out[payload.HeaderSize : payload.HeaderSize+area])
		copy(out[payload.HeaderSize:], nb)
		binary.BigEndian.PutUint32(out[12:], uint32(len(nb)))
		return out
	}
}

func TestVerifyRejects(t *testing.T) {
	f := newFixture(t)
	trustOld := payloadtest.TrustRoot(t, 1, 0, f.old)
	trustBoth2 := payloadtest.TrustRoot(t, 2, 0, f.old, f.new)
	trustRevoked := payloadtest.TrustRoot(t, 1, 0, f.old, f.new)
	trustRevoked.Revoke(f.old.ID)
	trustFloor := payloadtest.TrustRoot(t, 1, 6, f.old)
	app := payload.Expect{AppID: payload.DefaultAppID, Board: "amd64-usr"}

	flipSig := envelopeEdit(func(env map[string]any) {
		s := env["signatures"].([]any)[0].(map[string]any)
		sig, _ := base64Decode(s["sig"].(string))
		sig[len(sig)-1] ^= 1
		s["sig"] = base64Encode(sig)
	})
	tests := []struct {
		name  string
		path  func() string
		trust *payload.TrustRoot
		want  payload.Expect
		err   *payload.RejectError
	}{
		{"unsigned", func() string { return f.variant(t, "unsigned", nil) }, trustOld, app, payload.ErrNoSignature},
		{"invalid signature", func() string { return f.variant(t, "badsig", flipSig, f.old) }, trustOld, app, payload.ErrBadSignature},
		{"manifest changed after signing", func() string {
			return f.variant(t, "changed", envelopeEdit(func(env map[string]any) {
				var m map[string]any
				body, _ := base64Decode(env["payload"].(string))
				json.Unmarshal(body, &m)
				m["board"] = "arm64-usr"
				nb, _ := json.Marshal(m)
				env["payload"] = base64Encode(nb)
			}), f.old)
		}, trustOld, payload.Expect{}, payload.ErrBadSignature},
		{"unknown key", func() string { return f.variant(t, "stray", nil, f.stray) }, trustOld, app, payload.ErrUnknownKey},
		{"revoked key", func() string { return f.variant(t, "revoked", nil, f.old) }, trustRevoked, app, payload.ErrRevokedKey},
		{"below threshold", func() string { return f.variant(t, "one", nil, f.old, f.stray) }, trustBoth2, app, payload.ErrBelowThreshold},
		{"same key twice counts once", func() string {
			return f.variant(t, "twice", envelopeEdit(func(env map[string]any) {
				sigs := env["signatures"].([]any)
				env["signatures"] = append(sigs, sigs[0])
			}), f.old)
		}, trustBoth2, app, payload.ErrBelowThreshold},
		{"wrong board", func() string { return f.variant(t, "board", nil, f.old) }, trustOld, payload.Expect{Board: "arm64-usr"}, payload.ErrWrongBoard},
		{"wrong app", func() string { return f.variant(t, "app", nil, f.old) }, trustOld, payload.Expect{AppID: "e96281a6-d1af-4bde-9a0a-97b76e56dc57"}, payload.ErrWrongApp},
		{"security version below trust floor", func() string { return f.variant(t, "floor", nil, f.old) }, trustFloor, app, payload.ErrSecurityVersion},
		{"security version below expected floor", func() string { return f.variant(t, "floor2", nil, f.old) }, trustOld, payload.Expect{Floor: 9}, payload.ErrSecurityVersion},
		{"truncated", func() string {
			return f.variant(t, "trunc", func(b []byte) []byte { return b[:len(b)-1] }, f.old)
		}, trustOld, app, payload.ErrTruncated},
		{"truncated header", func() string {
			return f.variant(t, "trunchdr", func(b []byte) []byte { return b[:20] }, f.old)
		}, trustOld, app, payload.ErrTruncated},
		{"trailing data", func() string {
			return f.variant(t, "trail", func(b []byte) []byte { return append(b, 0) }, f.old)
		}, trustOld, app, payload.ErrMalformed},
		{"envelope area overflow", func() string {
			return f.variant(t, "areaovf", func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[16:], 0xffffffff)
				return b
			}, f.old)
		}, trustOld, app, payload.ErrLengthOverflow},
		{"envelope length past area", func() string {
			return f.variant(t, "envovf", func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[12:], binary.BigEndian.Uint32(b[16:])+1)
				return b
			}, f.old)
		}, trustOld, app, payload.ErrLengthOverflow},
		{"data length overflow", func() string {
			return f.variant(t, "dataovf", func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[24:], 1<<63)
				return b
			}, f.old)
		}, trustOld, app, payload.ErrLengthOverflow},
		{"table length overflow", func() string {
			return f.variant(t, "tableovf", func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[32:], ^uint64(0)-63)
				return b
			}, f.old)
		}, trustOld, app, payload.ErrLengthOverflow},
		{"one chunk over the chunk limit", func() string {
			return f.variant(t, "chunkmax", func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[32:], (payload.MaxChunks+1)*payload.TableEntrySize)
				return b
			}, f.old)
		}, trustOld, app, payload.ErrLengthOverflow},
		{"chunk table tampered", func() string {
			return f.variant(t, "table", func(b []byte) []byte {
				b[len(b)-1] ^= 1 // last byte of the last chunk's hash
				return b
			}, f.old)
		}, trustOld, app, payload.ErrChunkTableMismatch},
		{"bad magic", func() string {
			return f.variant(t, "magic", func(b []byte) []byte { b[0] = 'X'; return b }, f.old)
		}, trustOld, app, payload.ErrMalformed},
		{"future format version", func() string {
			return f.variant(t, "ver", func(b []byte) []byte { b[9] = 2; return b }, f.old)
		}, trustOld, app, payload.ErrMalformed},
		{"padding after the envelope changed", func() string {
			return f.variant(t, "padding", func(b []byte) []byte {
				n, area := binary.BigEndian.Uint32(b[12:]), binary.BigEndian.Uint32(b[16:])
				b[payload.HeaderSize+n+(area-n)/2] = 'x' // not signed: must be zero
				return b
			}, f.old)
		}, trustOld, app, payload.ErrMalformed},
		{"wrong payload type", func() string {
			return f.variant(t, "ptype", envelopeEdit(func(env map[string]any) { env["payloadType"] = "text/plain" }), f.old)
		}, trustOld, app, payload.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifyPath(tc.path(), tc.trust, tc.want)
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want reason %s", err, tc.err.Reason)
			}
			var re *payload.RejectError
			if !errors.As(err, &re) || re.Reason != tc.err.Reason {
				t.Fatalf("errors.As: %v", err)
			}
		})
	}
}

func TestVerifyAccepts(t *testing.T) {
	f := newFixture(t)
	app := payload.Expect{AppID: payload.DefaultAppID, Board: "amd64-usr", Floor: 5}
	tests := []struct {
		name  string
		keys  []*payloadtest.Key
		trust *payload.TrustRoot
	}{
		{"ecdsa", []*payloadtest.Key{f.old}, payloadtest.TrustRoot(t, 1, 0, f.old)},
		{"ed25519", []*payloadtest.Key{f.ed}, payloadtest.TrustRoot(t, 1, 0, f.ed)},
		{"2 of 3", []*payloadtest.Key{f.stray, f.ed, f.new}, payloadtest.TrustRoot(t, 2, 0, f.old, f.new, f.ed)},
		{"unknown and revoked signatures beside enough valid ones", []*payloadtest.Key{f.stray, f.old, f.new}, func() *payload.TrustRoot {
			tr := payloadtest.TrustRoot(t, 1, 0, f.old, f.new)
			tr.Revoke(f.old.ID)
			return tr
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := f.variant(t, tc.name, nil, tc.keys...)
			m, err := verifyPath(p, tc.trust, app)
			if err != nil {
				t.Fatal(err)
			}
			if m.Version != "1.2.3" || m.Board != "amd64-usr" || m.SecurityVersion != 5 || m.ImageSize != int64(len(f.image)) {
				t.Fatalf("manifest %+v", m)
			}
			if m.ImageSHA256 != f.manif.ImageSHA256 || len(m.Chunks) != m.ChunkCount {
				t.Fatalf("image hash or chunks differ")
			}
		})
	}
}

// TestKeyRotation walks a rotation: hosts trusting only the old key and hosts already trusting
// only the new key both accept payloads signed by both during the overlap; after the old key is
// revoked, a payload signed only by it is refused.
func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	oldHosts := payloadtest.TrustRoot(t, 1, 0, f.old)
	newHosts := payloadtest.TrustRoot(t, 1, 0, f.new)
	overlap := f.variant(t, "overlap", nil, f.old, f.new)
	for name, tr := range map[string]*payload.TrustRoot{"old hosts": oldHosts, "new hosts": newHosts} {
		if _, err := verifyPath(overlap, tr, payload.Expect{}); err != nil {
			t.Errorf("%s refuse the overlap payload: %v", name, err)
		}
	}
	after := payloadtest.TrustRoot(t, 1, 0, f.old, f.new)
	after.Revoke(f.old.ID)
	oldOnly := f.variant(t, "oldonly", nil, f.old)
	if _, err := verifyPath(oldOnly, after, payload.Expect{}); !errors.Is(err, payload.ErrRevokedKey) {
		t.Fatalf("old-key-only payload after revocation: %v, want revoked", err)
	}
	if _, err := verifyPath(overlap, after, payload.Expect{}); err != nil {
		t.Fatalf("overlap payload after revocation: %v", err)
	}
}

func TestSignReplacesSameKey(t *testing.T) {
	f := newFixture(t)
	p := f.variant(t, "resign", nil, f.old, f.old, f.new)
	b, _ := os.ReadFile(p)
	pf, err := payload.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if ids := pf.KeyIDs(); len(ids) != 2 || ids[0] != f.old.ID || ids[1] != f.new.ID {
		t.Fatalf("key ids %v", ids)
	}
}

func TestTrustRoot(t *testing.T) {
	a := payloadtest.NewKey(t, payload.KeyECDSAP256)
	b := payloadtest.NewKey(t, payload.KeyEd25519)
	tr := payloadtest.TrustRoot(t, 2, 7, a, b)
	tr.Revoke("ab" + a.ID[2:])
	js, err := tr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := payload.ParseTrustRoot(js)
	if err != nil {
		t.Fatal(err)
	}
	if back.Threshold != 2 || back.SecurityFloor != 7 || len(back.Keys) != 2 || back.Keys[1].ID != b.ID {
		t.Fatalf("round trip: %+v", back)
	}
	bad := []struct{ name, json string }{
		{"no version", `{"keys":[],"threshold":1}`},
		{"unknown field", `{"version":1,"keys":[],"threshold":1,"extra":1}`},
		{"no keys", `{"version":1,"keys":[],"threshold":1}`},
		{"id mismatch", `{"version":1,"keys":[{"id":"` + b.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":1}`},
		{"threshold too high", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":2}`},
		{"all revoked", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":1,"revoked":["` + a.ID + `"]}`},
		{"zero threshold", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":0}`},
		{"duplicate key", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `},{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":1}`},
		{"not a key", `{"version":1,"keys":[{"id":"x","publicKey":"hello"}],"threshold":1}`},
		// Key ids are compared as strings: an upper-case id would revoke nothing.
		{"revoked id in upper case", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `},{"id":"` + b.ID + `","publicKey":` + jsonString(b.PublicPEM) + `}],"threshold":1,"revoked":["` + strings.ToUpper(a.ID) + `"]}`},
		{"revoked id not hex", `{"version":1,"keys":[{"id":"` + a.ID + `","publicKey":` + jsonString(a.PublicPEM) + `}],"threshold":1,"revoked":["` + strings.Repeat("z", 64) + `"]}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := payload.ParseTrustRoot([]byte(tc.json)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestRevokeIDCase: Revoke takes a key id in upper case (as an operator may paste it) and the key
// is refused after a save and load; an id that is not hex makes the trust root unsavable rather
// than revoking nothing.
func TestRevokeIDCase(t *testing.T) {
	f := newFixture(t)
	tr := payloadtest.TrustRoot(t, 1, 0, f.old, f.new)
	tr.Revoke(strings.ToUpper(f.old.ID))
	js, err := tr.Marshal()
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	back, err := payload.ParseTrustRoot(js)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	oldOnly := f.variant(t, "oldonly", nil, f.old)
	if _, err := verifyPath(oldOnly, back, payload.Expect{}); !errors.Is(err, payload.ErrRevokedKey) {
		t.Fatalf("payload signed only by the key revoked in upper case: %v, want revoked", err)
	}

	notHex := payloadtest.TrustRoot(t, 1, 0, f.old)
	notHex.Revoke(strings.Repeat("z", 64))
	if _, err := notHex.Marshal(); err == nil || !strings.Contains(err.Error(), "hex") {
		t.Fatalf("marshal with revoked id zzzz…: %v, want a refusal naming hex", err)
	}
}

func TestBuildDedupAndEncodings(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 1<<20+7<<19)                              // 1 MiB of content, then 3.5 MiB of zeros
	copy(img[256<<10:], bytes.Repeat([]byte("twinslot"), 32<<10)) // compressible
	rnd := make([]byte, 256<<10)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(rng.Uint32())
	}
	copy(img[512<<10:], rnd)
	copy(img[768<<10:], rnd) // a duplicate extent
	o := payloadtest.Options("1")
	o.Chunking = payload.FixedChunking(64 << 10)
	k := payloadtest.NewKey(t, "")
	p := filepath.Join(dir, "p.tsp")
	payloadtest.BuildBytes(t, img, p, o, k)
	m, err := verifyPath(p, payloadtest.TrustRoot(t, 1, 0, k), payload.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[payload.Encoding]int{}
	var zeroLens []uint32
	for _, c := range m.Chunks {
		count[c.Encoding]++
		if c.Encoding == payload.EncodingZero {
			zeroLens = append(zeroLens, c.Length)
		}
	}
	if count[payload.EncodingZero] != 5 || count[payload.EncodingZstd] != 4 || count[payload.EncodingRaw] != 8 || len(m.Chunks) != 17 {
		t.Fatalf("encodings %v of %d chunks", count, len(m.Chunks))
	}
	// Runs of zeros are one entry each, cut at 1 MiB (the installers' read-back buffer).
	if !slices.Equal(zeroLens, []uint32{256 << 10, 1 << 20, 1 << 20, 1 << 20, 1 << 19}) {
		t.Fatalf("zero chunks of %v bytes", zeroLens)
	}
	// And the payload installs, zeros included.
	slot := newMemSlot(len(img))
	for i := range slot.b {
		slot.b[i] = 0xa5
	}
	file, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(file), int64(len(file))), payload.Target{Slot: slot, Size: int64(len(img))},
		payload.InstallOptions{Trust: payloadtest.TrustRoot(t, 1, 0, k)}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b, img) {
		t.Fatal("installed slot differs from the image")
	}
	// The duplicate extent is stored once.
	if m.DataSize > int64(256<<10)+(8<<10) {
		t.Fatalf("data %d bytes: duplicate stored twice?", m.DataSize)
	}
}

func base64Decode(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }
func base64Encode(b []byte) string          { return base64.StdEncoding.EncodeToString(b) }

func jsonString(b []byte) string {
	j, _ := json.Marshal(string(b))
	return string(j)
}

// TestManifestLengthOverflow hand-builds a file whose envelope carries a manifest over the limit.
func TestManifestLengthOverflow(t *testing.T) {
	big := bytes.Repeat([]byte("x"), payload.MaxManifestSize+1)
	env, _ := json.Marshal(map[string]any{"payloadType": payload.PayloadType, "payload": base64Encode(big), "signatures": []any{}})
	hdr := make([]byte, payload.HeaderSize)
	copy(hdr, payload.Magic)
	binary.BigEndian.PutUint16(hdr[8:], payload.FormatVersion)
	binary.BigEndian.PutUint32(hdr[12:], uint32(len(env)))
	binary.BigEndian.PutUint32(hdr[16:], uint32(len(env)))
	b := append(hdr, env...)
	_, err := payload.Open(bytes.NewReader(b), int64(len(b)))
	if !errors.Is(err, payload.ErrLengthOverflow) {
		t.Fatalf("got %v, want length-overflow", err)
	}
}

// TestSignGrowsEnvelopeArea signs a payload built with a small envelope area until the envelope
// no longer fits; Sign then moves the data behind a larger area and the file still verifies.
func TestSignGrowsEnvelopeArea(t *testing.T) {
	dir := t.TempDir()
	o := payloadtest.Options("1")
	o.EnvelopeArea = 4096
	p := filepath.Join(dir, "p.tsp")
	img := payloadtest.Image(256<<10, 3)
	payloadtest.BuildBytes(t, img, p, o)
	var keys []*payloadtest.Key
	for range 20 {
		k := payloadtest.NewKey(t, "")
		keys = append(keys, k)
		payloadtest.Sign(t, p, k)
	}
	b, _ := os.ReadFile(p)
	f, err := payload.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.EnvelopeArea() <= 4096 || len(f.KeyIDs()) != 20 {
		t.Fatalf("area %d, %d signatures", f.EnvelopeArea(), len(f.KeyIDs()))
	}
	m, err := f.Verify(payloadtest.TrustRoot(t, 3, 0, keys[0], keys[10], keys[19]), payload.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	slot := newMemSlot(len(img))
	if _, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(b), int64(len(b))),
		payload.Target{Slot: slot, Size: m.ImageSize}, payload.InstallOptions{Trust: payloadtest.TrustRoot(t, 1, 0, keys[5])}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b, img) {
		t.Fatal("installed image differs")
	}
}

// TestWriteRemovesLeftovers: the temporary files a killed 'payload build/sign/trust' left beside
// its output are removed by the next write of that output, and nothing else is.
func TestWriteRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "trust.json")
	for _, n := range []string{".trust.json.tmp123", ".trust.json.tmp456", ".other.json.tmp1", "trust.json.bak"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := payloadtest.TrustRoot(t, 1, 0, payloadtest.NewKey(t, "")).Save(out); err != nil {
		t.Fatal(err)
	}
	var names []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != ".other.json.tmp1 trust.json trust.json.bak" {
		t.Fatalf("files after the write: %s", got)
	}
}

// TestAppIDForms: Build keeps an app id in one form (lower case, no braces) and Verify matches
// app ids with or without braces, in any case; an app id that is no UUID is refused.
func TestAppIDForms(t *testing.T) {
	key := payloadtest.NewKey(t, "")
	tr := payloadtest.TrustRoot(t, 1, 0, key)
	o := payloadtest.Options("1.0.0")
	o.AppID = "{3C2B1A00-0000-4000-8000-00000000ABCD}"
	p := filepath.Join(t.TempDir(), "p.tsp")
	m := payloadtest.BuildBytes(t, payloadtest.Image(64<<10, 1), p, o, key)
	if m.AppID != "3c2b1a00-0000-4000-8000-00000000abcd" {
		t.Fatalf("manifest app id %q", m.AppID)
	}
	for _, want := range []string{o.AppID, "3c2b1a00-0000-4000-8000-00000000abcd", "{3c2b1a00-0000-4000-8000-00000000abcd}"} {
		if _, err := verifyPath(p, tr, payload.Expect{AppID: want}); err != nil {
			t.Errorf("expect app %s: %v", want, err)
		}
	}
	if _, err := verifyPath(p, tr, payload.Expect{AppID: "flatcar"}); !errors.Is(err, payload.ErrWrongApp) {
		t.Errorf("expect app flatcar: %v", err)
	}
	o.AppID = "flatcar"
	if _, err := payload.Build(t.Context(), bytes.NewReader(payloadtest.Image(4096, 1)), 4096, o, p+".2"); err == nil || !strings.Contains(err.Error(), "UUID") {
		t.Fatalf("build with app id flatcar: %v", err)
	}
}

// A signed table whose chunks are longer than the manifest's chunking makes them (a data chunk
// past its largest, a zero chunk past max(1 MiB, its largest)) is refused before anything is
// written: the installer's buffers are sized by the chunking.
func TestInstallRefusesChunksLongerThanTheChunking(t *testing.T) {
	k := payloadtest.NewKey(t, "")
	data := payloadtest.Image(4<<20, 41)
	for i := range data {
		if data[i] == 0 {
			data[i] = 1 // no zero chunk among the data chunks
		}
	}
	for _, tc := range []struct {
		name  string
		image []byte
	}{
		{"data chunk", data},
		{"zero chunk", append(make([]byte, 2<<20), data...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Built with 2 MiB fixed chunks, then signed with a manifest that says 1 MiB.
			opts := payloadtest.Options("1.0.0")
			opts.Chunking = payload.FixedChunking(2 << 20)
			p := filepath.Join(t.TempDir(), "p.tsp")
			payloadtest.BuildBytes(t, tc.image, p, opts)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b = envelopeEdit(func(env map[string]any) {
				var m map[string]any
				body, _ := base64Decode(env["payload"].(string))
				json.Unmarshal(body, &m)
				m["chunking"] = map[string]any{"algorithm": payload.ChunkingFixed, "size": 1 << 20}
				nb, _ := json.Marshal(m)
				env["payload"] = base64Encode(nb)
			})(b)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			payloadtest.Sign(t, p, k)
			b, err = os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			slot := newMemSlot(8 << 20)
			_, err = payload.Install(t.Context(), payload.FromFile(bytes.NewReader(b), int64(len(b))),
				payload.Target{Slot: slot, Size: int64(len(slot.b)), Active: bytes.NewReader(data), ActiveSize: int64(len(data))},
				payload.InstallOptions{Trust: payloadtest.TrustRoot(t, 1, 0, k), Retry: noWait})
			if !errors.Is(err, payload.ErrLengthOverflow) {
				t.Fatalf("install: %v, want %v", err, payload.ErrLengthOverflow)
			}
			if slot.writes != 0 {
				t.Fatalf("%d writes before the table was refused", slot.writes)
			}
		})
	}
}
