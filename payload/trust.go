package payload

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

// TrustRootVersion is the version of the trust-root JSON schema.
const TrustRootVersion = 1

// TrustedKey is one public key of a trust root.
type TrustedKey struct {
	// ID is KeyID(public key): lower-case hex SHA-256 of the DER SubjectPublicKeyInfo.
	ID string `json:"id"`
	// PublicKey is the PEM "PUBLIC KEY" block.
	PublicKey string `json:"publicKey"`

	verifier signature.Verifier
}

// TrustRoot says which keys may sign payloads for a host: a payload needs valid signatures by at
// least Threshold distinct keys of Keys that are not in Revoked, and a security version of at least
// SecurityFloor.
type TrustRoot struct {
	Version       int          `json:"version"`
	Keys          []TrustedKey `json:"keys"`
	Threshold     int          `json:"threshold"`
	Revoked       []string     `json:"revoked,omitempty"`
	SecurityFloor uint64       `json:"securityFloor"`
}

// KeyID returns the id twinslot uses for a public key: hex SHA-256 of its DER SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// checkKeyType accepts the key types twinslot verifies: ECDSA P-256, Ed25519 and RSA ≥ 2048 bits
// (the last two for KMS signers that offer only those).
func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA curve %s is not supported (use P-256)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small (need 2048 or more)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("key type %T is not supported (use ECDSA P-256 or Ed25519)", pub)
	}
	return nil
}

// NewTrustedKey parses a PEM public key into a TrustedKey with its derived id.
func NewTrustedKey(pubPEM []byte) (TrustedKey, error) {
	if len(pubPEM) > maxPublicKeyPEM {
		return TrustedKey{}, fmt.Errorf("public key PEM is %d bytes, limit %d", len(pubPEM), maxPublicKeyPEM)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pubPEM)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("parse public key: %w", err)
	}
	return trustedKeyFromPublic(pub)
}

func trustedKeyFromPublic(pub crypto.PublicKey) (TrustedKey, error) {
	if err := checkKeyType(pub); err != nil {
		return TrustedKey{}, err
	}
	id, err := KeyID(pub)
	if err != nil {
		return TrustedKey{}, err
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("load verifier: %w", err)
	}
	canon, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return TrustedKey{}, err
	}
	return TrustedKey{ID: id, PublicKey: string(canon), verifier: v}, nil
}

// NewTrustRoot builds a trust root from PEM public keys. threshold 0 means 1.
func NewTrustRoot(pubPEMs [][]byte, threshold int, floor uint64) (*TrustRoot, error) {
	if threshold == 0 {
		threshold = 1
	}
	t := &TrustRoot{Version: TrustRootVersion, Threshold: threshold, SecurityFloor: floor}
	for i, p := range pubPEMs {
		k, err := NewTrustedKey(p)
		if err != nil {
			return nil, fmt.Errorf("trust root key %d: %w", i+1, err)
		}
		t.Keys = append(t.Keys, k)
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return t, nil
}

// ParseTrustRoot decodes and checks a trust-root JSON document.
func ParseTrustRoot(b []byte) (*TrustRoot, error) {
	if len(b) > maxTrustRootSize {
		return nil, fmt.Errorf("trust root is %d bytes, limit %d", len(b), maxTrustRootSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t TrustRoot
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("trust root: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trust root: trailing data after the JSON object")
	}
	if t.Version != TrustRootVersion {
		return nil, fmt.Errorf("trust root version %d is not supported (want %d)", t.Version, TrustRootVersion)
	}
	if len(t.Keys) > maxTrustRootKeys {
		return nil, fmt.Errorf("trust root lists %d keys, limit %d", len(t.Keys), maxTrustRootKeys)
	}
	for i, k := range t.Keys {
		parsed, err := NewTrustedKey([]byte(k.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("trust root key %d: %w", i+1, err)
		}
		if k.ID != parsed.ID {
			return nil, fmt.Errorf("trust root key %d: id %q does not match its public key (id %s)", i+1, k.ID, parsed.ID)
		}
		t.Keys[i] = parsed
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	return &t, nil
}

// LoadTrustRoot reads and parses a trust-root file.
func LoadTrustRoot(path string) (*TrustRoot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load trust root: %w", err)
	}
	t, err := ParseTrustRoot(b)
	if err != nil {
		return nil, fmt.Errorf("load trust root %s: %w", path, err)
	}
	return t, nil
}

func (t *TrustRoot) check() error {
	seen := map[string]bool{}
	usable := 0
	for _, k := range t.Keys {
		if seen[k.ID] {
			return fmt.Errorf("trust root lists key %s twice", k.ID)
		}
		seen[k.ID] = true
		if !slices.Contains(t.Revoked, k.ID) {
			usable++
		}
	}
	for _, r := range t.Revoked {
		if !isKeyID(r) {
			return fmt.Errorf("trust root: revoked id %q is not a key id (64 lower-case hex characters, as 'payload keygen' prints it)", r)
		}
	}
	switch {
	case usable == 0:
		return fmt.Errorf("trust root has no usable (listed and not revoked) key")
	case t.Threshold < 1:
		return fmt.Errorf("trust root threshold %d must be at least 1", t.Threshold)
	case t.Threshold > usable:
		return fmt.Errorf("trust root threshold %d exceeds its %d usable keys; no payload could ever verify", t.Threshold, usable)
	}
	return nil
}

// Marshal returns the trust root as indented JSON.
func (t *TrustRoot) Marshal() ([]byte, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Save writes the trust root to path atomically (temporary file, fsync, rename, fsync dir).
func (t *TrustRoot) Save(path string) error {
	b, err := t.Marshal()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// Revoke adds id to the revoked list (idempotent). The id is taken in either case and stored in
// lower case, the form KeyID returns and verification compares against; an id that is not 64 hex
// characters makes the trust root invalid (Marshal and Save refuse it).
func (t *TrustRoot) Revoke(id string) {
	id = strings.ToLower(id)
	if !slices.Contains(t.Revoked, id) {
		t.Revoked = append(t.Revoked, id)
	}
}

func (t *TrustRoot) key(id string) *TrustedKey {
	for i := range t.Keys {
		if t.Keys[i].ID == id {
			return &t.Keys[i]
		}
	}
	return nil
}

func (t *TrustRoot) revoked(id string) bool { return slices.Contains(t.Revoked, id) }

// isKeyID reports whether s has the form of a KeyID: 64 lower-case hex characters. Key ids are
// compared as strings, so an id in another case would name no key.
func isKeyID(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
