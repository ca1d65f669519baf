package payloadtest

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/twinslot/twinslot/payload"
)

// Key is a fresh signing key.
type Key struct {
	ID         string
	Signer     signature.Signer
	PrivatePEM []byte
	PublicPEM  []byte
}

// NewKey makes a key of type kind (payload.KeyECDSAP256 or payload.KeyEd25519; "" is ECDSA).
func NewKey(t testing.TB, kind string) *Key {
	t.Helper()
	priv, pub, err := payload.GenerateKey(kind, nil)
	if err != nil {
		t.Fatalf("payloadtest: generate key: %v", err)
	}
	s, err := payload.LoadSigner(priv, nil)
	if err != nil {
		t.Fatalf("payloadtest: load signer: %v", err)
	}
	tk, err := payload.NewTrustedKey(pub)
	if err != nil {
		t.Fatalf("payloadtest: %v", err)
	}
	return &Key{ID: tk.ID, Signer: s, PrivatePEM: priv, PublicPEM: pub}
}

// WriteFiles writes the key as dir/name.key (0600) and dir/name.pub, as 'payload keygen' does,
// and returns the two paths.
func (k *Key) WriteFiles(t testing.TB, dir, name string) (keyPath, pubPath string) {
	t.Helper()
	keyPath, pubPath = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(keyPath, k.PrivatePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, k.PublicPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPath, pubPath
}

// TrustRoot makes a trust root of keys with the given threshold (0 = 1) and security floor.
func TrustRoot(t testing.TB, threshold int, floor uint64, keys ...*Key) *payload.TrustRoot {
	t.Helper()
	var pems [][]byte
	for _, k := range keys {
		pems = append(pems, k.PublicPEM)
	}
	tr, err := payload.NewTrustRoot(pems, threshold, floor)
	if err != nil {
		t.Fatalf("payloadtest: trust root: %v", err)
	}
	return tr
}

// WriteTrustRoot writes tr as JSON to dir/trust.json and returns the path.
func WriteTrustRoot(t testing.TB, dir string, tr *payload.TrustRoot) string {
	t.Helper()
	b, err := tr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "trust.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Options returns build options for version with board "amd64-usr", the default app id,
// security version 1 and a fixed creation time.
func Options(version string) payload.BuildOptions {
	return payload.BuildOptions{
		AppID: payload.DefaultAppID, Board: "amd64-usr", Version: version, SecurityVersion: 1,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// BuildFile builds a payload from the image file at imagePath into dir/name, signs it with keys
// and returns its path and manifest.
func BuildFile(t testing.TB, imagePath, out string, o payload.BuildOptions, keys ...*Key) *payload.Manifest {
	t.Helper()
	f, err := os.Open(imagePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.Build(t.Context(), f, st.Size(), o, out)
	if err != nil {
		t.Fatalf("payloadtest: build: %v", err)
	}
	Sign(t, out, keys...)
	return m
}

// BuildBytes builds a payload from image into out and signs it with keys.
func BuildBytes(t testing.TB, image []byte, out string, o payload.BuildOptions, keys ...*Key) *payload.Manifest {
	t.Helper()
	m, err := payload.Build(t.Context(), bytes.NewReader(image), int64(len(image)), o, out)
	if err != nil {
		t.Fatalf("payloadtest: build: %v", err)
	}
	Sign(t, out, keys...)
	return m
}

// Sign adds a signature by each key to the payload at path.
func Sign(t testing.TB, path string, keys ...*Key) {
	t.Helper()
	for _, k := range keys {
		if err := payload.Sign(t.Context(), path, k.Signer, ""); err != nil {
			t.Fatalf("payloadtest: sign: %v", err)
		}
	}
}

// Image returns size bytes of deterministic image-like content for seed: runs of zeros, of
// text-like words (compressible) and of random bytes, in 4 KiB-aligned extents.
func Image(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	words := []string{"usr", "lib", "systemd", "twinslot ", "update", "kernel ", "module", "\n", "firmware", "=", "[Unit]\n", "ExecStart"}
	for off := 0; off < size; {
		n := min(size-off, 4096*(1+rng.IntN(64)))
		switch k := rng.IntN(10); {
		case k < 2: // zeros
		case k < 6: // text-like
			p := off
			for p < off+n {
				p += copy(b[p:off+n], words[rng.IntN(len(words))])
			}
		default: // random
			for i := off; i < off+n; i++ {
				b[i] = byte(rng.Uint32())
			}
		}
		off += n
	}
	return b
}

// Mutate returns a copy of img where about fraction of the bytes changed, in file-like runs of
// 4 KiB to 256 KiB (4 KiB-aligned) at random places.
func Mutate(img []byte, fraction float64, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, ^seed))
	out := bytes.Clone(img)
	blocks := len(out) / 4096
	for todo := int(float64(blocks) * fraction); todo > 0 && blocks > 0; {
		n := min(1+rng.IntN(64), todo, blocks)
		b := rng.IntN(blocks - n + 1)
		for j := b * 4096; j < (b+n)*4096; j++ {
			out[j] = byte(rng.Uint32())
		}
		todo -= n
	}
	return out
}
