package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/twinslot/twinslot/omaha"
)

// File is an opened payload: header and envelope parsed and bounded, nothing trusted yet.
// Call Verify before using anything it says.
type File struct {
	// readAt reads exactly len(p) bytes at off (bound to the context given at open time).
	readAt func(p []byte, off int64) error
	hdr    header
	env    dsse.Envelope
	body   []byte // decoded DSSE payload (unverified manifest JSON)
	sigs   [][]byte
	closer io.Closer // the file OpenFile opened, if any
}

// Expect is what the caller requires of a manifest besides valid signatures. Empty fields (and a
// zero Floor) are not checked; the trust root's SecurityFloor always applies.
type Expect struct {
	AppID string
	Board string
	Floor uint64
}

// Open parses the header and the envelope of a payload of size bytes read from r. It bounds every
// length and makes no trust decision; see File.Verify.
func Open(r io.ReaderAt, size int64) (*File, error) {
	src := &readerAtSource{r: r, size: size}
	return openWith(size, src.readFull)
}

// OpenFile opens the payload file at path (see Open). Close the File when done.
func OpenFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := Open(fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.closer = fh
	return f, nil
}

// Close closes the file OpenFile opened; for a File from Open it does nothing.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// openSource opens the payload behind src; the File's later reads use ctx and each adds one to
// requests.
func openSource(ctx context.Context, src byteSource, requests *atomic.Int64) (*File, error) {
	return openWith(src.Size(), func(p []byte, off int64) error {
		requests.Add(1)
		return src.ReadAt(ctx, p, off)
	})
}

func openWith(size int64, readAt func(p []byte, off int64) error) (*File, error) {
	if size < HeaderSize {
		return nil, reject(ReasonTruncated, "file is %d bytes, shorter than the %d-byte header", size, HeaderSize)
	}
	hb := make([]byte, HeaderSize)
	if err := readAt(hb, 0); err != nil {
		return nil, fmt.Errorf("read payload header: %w", err)
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, err
	}
	if want := h.fileSize(); size != want {
		if size < want {
			return nil, reject(ReasonTruncated, "file is %d bytes, its header announces %d; download it again", size, want)
		}
		return nil, reject(ReasonMalformed, "file is %d bytes, its header announces %d (trailing data)", size, want)
	}
	// The whole area in one read: the padding after the envelope is not signed, so it must be
	// zero, or the bytes of a signed payload could be changed.
	area := make([]byte, h.EnvelopeArea)
	if err := readAt(area, HeaderSize); err != nil {
		return nil, fmt.Errorf("read payload envelope: %w", err)
	}
	eb := area[:h.EnvelopeLen]
	if i := bytes.IndexFunc(area[h.EnvelopeLen:], func(r rune) bool { return r != 0 }); i >= 0 {
		return nil, reject(ReasonMalformed, "byte %d of the envelope area (padding, not signed) is not zero: the file was changed after it was built; download or build it again",
			int(h.EnvelopeLen)+i)
	}
	f := &File{readAt: readAt, hdr: h}
	if err := f.parseEnvelope(eb); err != nil {
		return nil, err
	}
	return f, nil
}

// parseEnvelope decodes the DSSE envelope JSON, bounding signatures and payload.
func (f *File) parseEnvelope(b []byte) error {
	env, body, sigs, err := decodeEnvelope(b)
	if err != nil {
		return err
	}
	f.env, f.body, f.sigs = env, body, sigs
	return nil
}

func decodeEnvelope(b []byte) (dsse.Envelope, []byte, [][]byte, error) {
	var env dsse.Envelope
	if len(b) > MaxEnvelopeArea {
		return env, nil, nil, reject(ReasonLengthOverflow, "envelope is %d bytes, limit %d", len(b), MaxEnvelopeArea)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return env, nil, nil, rejectErr(ReasonMalformed, err, "decode envelope")
	}
	if _, err := dec.Token(); err != io.EOF {
		return env, nil, nil, reject(ReasonMalformed, "trailing data after the envelope")
	}
	if env.PayloadType != PayloadType {
		return env, nil, nil, reject(ReasonMalformed, "envelope payload type %q, want %q", env.PayloadType, PayloadType)
	}
	if base64.StdEncoding.DecodedLen(len(env.Payload)) > MaxManifestSize {
		return env, nil, nil, reject(ReasonLengthOverflow, "manifest is over %d bytes", MaxManifestSize)
	}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return env, nil, nil, rejectErr(ReasonMalformed, err, "decode envelope payload")
	}
	if len(env.Signatures) > MaxSignatures {
		return env, nil, nil, reject(ReasonLengthOverflow, "%d signatures, limit %d", len(env.Signatures), MaxSignatures)
	}
	sigs := make([][]byte, len(env.Signatures))
	for i, s := range env.Signatures {
		if len(s.KeyID) > MaxKeyIDSize {
			return env, nil, nil, reject(ReasonLengthOverflow, "signature %d key id is %d bytes, limit %d", i+1, len(s.KeyID), MaxKeyIDSize)
		}
		if base64.StdEncoding.DecodedLen(len(s.Sig)) > MaxSignatureSize {
			return env, nil, nil, reject(ReasonLengthOverflow, "signature %d is over %d bytes", i+1, MaxSignatureSize)
		}
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			return env, nil, nil, rejectErr(ReasonMalformed, err, "decode signature %d", i+1)
		}
		sigs[i] = sig
	}
	return env, body, sigs, nil
}

// KeyIDs returns the key ids the envelope's signatures claim (unverified).
func (f *File) KeyIDs() []string {
	ids := make([]string, len(f.env.Signatures))
	for i, s := range f.env.Signatures {
		ids[i] = s.KeyID
	}
	return ids
}

// Size is the payload file size.
func (f *File) Size() int64 { return f.hdr.fileSize() }

// EnvelopeArea is the number of bytes reserved for the envelope.
func (f *File) EnvelopeArea() int { return int(f.hdr.EnvelopeArea) }

// Unverified decodes the manifest WITHOUT checking any signature, for display (payload inspect).
// Never act on it.
func (f *File) Unverified() (*Manifest, error) {
	return parseManifest(f.body)
}

// tablePiece is how much of the chunk table Verify reads at once (a multiple of TableEntrySize).
const tablePiece = 1 << 20

// Verify checks the envelope against the trust root and the manifest against want, then reads the
// chunk table and checks it against the signed hash. It returns the manifest with Chunks filled.
// Every refusal is a *RejectError.
func (f *File) Verify(t *TrustRoot, want Expect) (*Manifest, error) {
	m, err := f.verifyManifest(t, want)
	if err != nil {
		return nil, err
	}
	if err := f.readTable(m); err != nil {
		return nil, err
	}
	return m, nil
}

// verifyManifest checks the envelope against the trust root and the manifest against want and
// the header, without reading the chunk table (a delta install does not need it).
func (f *File) verifyManifest(t *TrustRoot, want Expect) (*Manifest, error) {
	if t == nil {
		return nil, fmt.Errorf("verify payload: no trust root given (refusing to skip verification)")
	}
	if err := f.verifySignatures(t); err != nil {
		return nil, err
	}
	m, err := parseManifest(f.body)
	if err != nil {
		return nil, err
	}
	if want.AppID != "" && !sameApp(m.AppID, want.AppID) {
		return nil, reject(ReasonWrongApp, "payload is for app %s, this host runs app %s", m.AppID, want.AppID)
	}
	if want.Board != "" && m.Board != want.Board {
		return nil, reject(ReasonWrongBoard, "payload is for board %s, this host is %s", m.Board, want.Board)
	}
	floor := max(want.Floor, t.SecurityFloor)
	if m.SecurityVersion < floor {
		return nil, reject(ReasonSecurityVersion, "payload security version %d is below this host's floor %d (a downgrade)", m.SecurityVersion, floor)
	}
	if uint64(m.DataSize) != f.hdr.DataLen || uint64(m.TableSize) != f.hdr.TableLen {
		return nil, reject(ReasonMalformed, "header section lengths (data %d, table %d) differ from the signed manifest (data %d, table %d)",
			f.hdr.DataLen, f.hdr.TableLen, m.DataSize, m.TableSize)
	}
	if int(f.hdr.Version) != m.FormatVersion {
		return nil, reject(ReasonMalformed, "header format version %d differs from the signed manifest's %d", f.hdr.Version, m.FormatVersion)
	}
	return m, nil
}

// readTable reads the chunk table of m, checks it against the signed hash and fills m.Chunks.
func (f *File) readTable(m *Manifest) error {
	// The table is read, hashed and parsed a piece at a time: a reader never holds the table's
	// bytes beside its chunks. Nothing parsed is used unless the whole table matched its hash.
	h := sha256.New()
	p := newTableParser(m.ChunkCount, m.ImageSize, f.hdr.DataLen, m.Chunking)
	var parseErr error
	piece := make([]byte, min(int64(f.hdr.TableLen), tablePiece))
	for done := int64(0); done < int64(f.hdr.TableLen); {
		b := piece[:min(int64(len(piece)), int64(f.hdr.TableLen)-done)]
		if err := f.readAt(b, f.hdr.tableOffset()+done); err != nil {
			return fmt.Errorf("read chunk table: %w", err)
		}
		h.Write(b)
		if parseErr == nil {
			parseErr = p.add(b)
		}
		done += int64(len(b))
	}
	if Digest(h.Sum(nil)) != m.TableSHA256 {
		return reject(ReasonChunkTableMismatch, "chunk table does not match the signed hash %s", m.TableSHA256)
	}
	if parseErr != nil {
		return parseErr
	}
	chunks, err := p.finish()
	if err != nil {
		return err
	}
	m.Chunks = chunks
	return nil
}

// verifySignatures counts distinct, valid, trusted, non-revoked keys over the DSSE PAE.
func (f *File) verifySignatures(t *TrustRoot) error {
	if len(f.sigs) == 0 {
		return reject(ReasonNoSignature, "the payload is not signed; sign it with 'payload sign'")
	}
	pae := dsse.PAE(f.env.PayloadType, f.body)
	valid := map[string]bool{}
	var revoked, unknown, bad []string
	for i, s := range f.env.Signatures {
		switch {
		case s.KeyID == "":
			// No key id: try every usable key (DSSE allows an empty keyid).
			for _, k := range t.Keys {
				if !t.revoked(k.ID) && !valid[k.ID] && k.verifier.VerifySignature(bytes.NewReader(f.sigs[i]), bytes.NewReader(pae)) == nil {
					valid[k.ID] = true
					break
				}
			}
		case t.revoked(s.KeyID):
			revoked = append(revoked, s.KeyID)
		case t.key(s.KeyID) == nil:
			unknown = append(unknown, s.KeyID)
		default:
			k := t.key(s.KeyID)
			if err := k.verifier.VerifySignature(bytes.NewReader(f.sigs[i]), bytes.NewReader(pae)); err != nil {
				bad = append(bad, s.KeyID)
				continue
			}
			valid[s.KeyID] = true
		}
	}
	if len(valid) >= t.Threshold {
		return nil
	}
	detail := fmt.Sprintf("%d valid trusted signature(s), threshold %d", len(valid), t.Threshold)
	if len(bad) > 0 {
		detail += fmt.Sprintf("; invalid: %v", shortIDs(bad))
	}
	if len(revoked) > 0 {
		detail += fmt.Sprintf("; revoked: %v", shortIDs(revoked))
	}
	if len(unknown) > 0 {
		detail += fmt.Sprintf("; unknown: %v", shortIDs(unknown))
	}
	switch {
	case len(valid) > 0:
		return reject(ReasonBelowThreshold, "%s", detail)
	case len(bad) > 0:
		return reject(ReasonBadSignature, "%s", detail)
	case len(revoked) > 0:
		return reject(ReasonRevokedKey, "%s", detail)
	case len(unknown) > 0:
		return reject(ReasonUnknownKey, "%s", detail)
	}
	return reject(ReasonBadSignature, "%s (signatures without key id matched no usable key)", detail)
}

func shortIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		if len(id) > 12 {
			id = id[:12]
		}
		out[i] = id
	}
	return out
}

// sameApp reports whether two app ids name the same app: braces optional, case-insensitive.
func sameApp(a, b string) bool {
	na, err := omaha.ParseAppID(a)
	if err != nil {
		return false
	}
	nb, err := omaha.ParseAppID(b)
	return err == nil && na == nb
}
