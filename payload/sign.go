package payload

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

// Sign adds a signature by signer to the payload file at path (replacing an earlier signature by
// the same key). keyID "" derives the id from the signer's public key. Any sigstore Signer works,
// so KMS signers fit. The file is rewritten through a temporary file and renamed, so a crash
// leaves either the old or the new file.
func Sign(ctx context.Context, path string, signer signature.Signer, keyID string) error {
	pub, err := signer.PublicKey(options.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign %s: public key of signer: %w", path, err)
	}
	if err := checkKeyType(pub); err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	derived, err := KeyID(pub)
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	if keyID == "" {
		keyID = derived
	}
	if keyID != derived {
		return fmt.Errorf("sign %s: key id %s does not match the signer's public key (id %s)", path, keyID, derived)
	}
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	f, err := Open(in, st.Size())
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	if _, err := parseManifest(f.body); err != nil {
		return fmt.Errorf("sign %s: refusing to sign an invalid manifest: %w", path, err)
	}

	// sigstore's DSSE wrapper signs PAE(payloadType, manifest) and returns a one-signature envelope.
	one, err := sigdsse.WrapSigner(signer, PayloadType).SignMessage(bytes.NewReader(f.body), options.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	var signed dsse.Envelope
	if err := json.Unmarshal(one, &signed); err != nil || len(signed.Signatures) != 1 {
		return fmt.Errorf("sign %s: unexpected DSSE envelope from signer: %v", path, err)
	}
	// Check the fresh signature before writing it: a misconfigured KMS key must not produce a
	// payload that no host accepts.
	rawSig, err := base64.StdEncoding.DecodeString(signed.Signatures[0].Sig)
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	tk, err := trustedKeyFromPublic(pub)
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	if err := tk.verifier.VerifySignature(bytes.NewReader(rawSig), bytes.NewReader(dsse.PAE(PayloadType, f.body))); err != nil {
		return fmt.Errorf("sign %s: the new signature does not verify with the signer's public key: %w", path, err)
	}

	env := f.env
	sigs := []dsse.Signature{}
	for _, s := range env.Signatures {
		if s.KeyID != keyID {
			sigs = append(sigs, s)
		}
	}
	sigs = append(sigs, dsse.Signature{KeyID: keyID, Sig: signed.Signatures[0].Sig})
	if len(sigs) > MaxSignatures {
		return fmt.Errorf("sign %s: %d signatures would exceed the limit %d", path, len(sigs), MaxSignatures)
	}
	env.Signatures = sigs
	return rewriteEnvelope(in, f.hdr, env, path)
}

// rewriteEnvelope writes a copy of the payload in with a new envelope to a temporary file beside
// path and renames it over path.
func rewriteEnvelope(in *os.File, h header, env dsse.Envelope, path string) error {
	eb, err := json.Marshal(env)
	if err != nil {
		return err
	}
	area := h.EnvelopeArea
	if uint32(len(eb)) > area {
		area = uint32(roundUp(int64(len(eb)), 4096))
	}
	if area > MaxEnvelopeArea {
		return fmt.Errorf("envelope of %d bytes exceeds the limit %d", len(eb), MaxEnvelopeArea)
	}
	nh := h
	nh.EnvelopeLen, nh.EnvelopeArea = uint32(len(eb)), area
	return atomicfile.Write(path, 0o644, func(out *os.File) error {
		head := make([]byte, HeaderSize+int(area))
		copy(head, nh.marshal())
		copy(head[HeaderSize:], eb)
		if _, err := out.Write(head); err != nil {
			return err
		}
		if _, err := in.Seek(h.dataOffset(), io.SeekStart); err != nil {
			return err
		}
		n := int64(h.DataLen + h.TableLen)
		if c, err := io.Copy(out, io.LimitReader(in, n)); err != nil || c != n {
			return fmt.Errorf("copy payload body: %d of %d bytes: %v", c, n, err)
		}
		return nil
	})
}

func roundUp(n, m int64) int64 { return (n + m - 1) / m * m }
