package payload

import (
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Key types GenerateKey makes.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyEd25519   = "ed25519"
)

// GenerateKey makes a new signing key of type kt (KeyECDSAP256 or KeyEd25519) and returns the
// private key as PKCS#8 PEM and the public key as PEM. A non-nil pf encrypts the private key
// (sigstore/cosign "ENCRYPTED SIGSTORE PRIVATE KEY").
func GenerateKey(kt string, pf cryptoutils.PassFunc) (privPEM, pubPEM []byte, err error) {
	switch kt {
	case KeyECDSAP256, "":
		return cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), pf)
	case KeyEd25519:
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		if pf != nil {
			der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, pf)
			if err != nil {
				return nil, nil, err
			}
			privPEM = cryptoutils.PEMEncode(cryptoutils.PEMType("ENCRYPTED SIGSTORE PRIVATE KEY"), der)
		} else if privPEM, err = cryptoutils.MarshalPrivateKeyToPEM(priv); err != nil {
			return nil, nil, err
		}
		pubPEM, err = cryptoutils.MarshalPublicKeyToPEM(pub)
		return privPEM, pubPEM, err
	}
	return nil, nil, fmt.Errorf("unknown key type %q (want %s or %s)", kt, KeyECDSAP256, KeyEd25519)
}

// LoadSigner parses a PEM private key (PKCS#8, EC, or sigstore-encrypted with pf) into a sigstore
// signer. Any other signature.Signer (for example a KMS signer from sigstore's kms packages) can
// be passed to Sign directly.
func LoadSigner(privPEM []byte, pf cryptoutils.PassFunc) (signature.Signer, error) {
	if pf == nil {
		pf = cryptoutils.SkipPassword
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(privPEM, pf)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("load signer: %w", err)
	}
	pub, err := s.PublicKey()
	if err != nil {
		return nil, err
	}
	if err := checkKeyType(pub); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadSignerFile reads a private key file; see LoadSigner.
func LoadSignerFile(path string, pf cryptoutils.PassFunc) (signature.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	s, err := LoadSigner(b, pf)
	if err != nil {
		return nil, fmt.Errorf("load signing key %s: %w", path, err)
	}
	return s, nil
}
