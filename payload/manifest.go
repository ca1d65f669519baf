package payload

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode"
)

// Digest is a SHA-256 digest; it marshals as lower-case hex.
type Digest [32]byte

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(d[:])), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("sha256 digest must be 64 hex characters, got %d", len(b))
	}
	_, err := hex.Decode(d[:], b)
	return err
}

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Chunking algorithms.
const (
	ChunkingFixed = "fixed" // fixed-size chunks of Size bytes (the last may be shorter)
	ChunkingRabin = "rabin" // content-defined: restic/chunker Rabin fingerprint, Polynomial, Min, Max, AverageBits
)

// Chunking says how the image was cut into chunks, so an installer can cut the active slot the
// same way and find chunks it already has.
type Chunking struct {
	Algorithm   string `json:"algorithm"`
	Size        int    `json:"size,omitempty"`        // fixed
	Min         int    `json:"min,omitempty"`         // rabin
	Max         int    `json:"max,omitempty"`         // rabin
	AverageBits int    `json:"averageBits,omitempty"` // rabin: boundary when the low AverageBits bits are zero
	Polynomial  uint64 `json:"polynomial,omitempty"`  // rabin: irreducible polynomial of degree 53
}

func (c Chunking) check() error {
	switch c.Algorithm {
	case ChunkingFixed:
		if c.Size < 4096 || c.Size > MaxChunkSize {
			return fmt.Errorf("fixed chunk size %d outside 4096..%d", c.Size, MaxChunkSize)
		}
		if c.Min != 0 || c.Max != 0 || c.AverageBits != 0 || c.Polynomial != 0 {
			return fmt.Errorf("fixed chunking takes only a size")
		}
	case ChunkingRabin:
		if c.Min < 64 || c.Max > MaxChunkSize || c.Min >= c.Max {
			return fmt.Errorf("rabin chunk bounds %d..%d outside 64..%d", c.Min, c.Max, MaxChunkSize)
		}
		if c.AverageBits < 8 || c.AverageBits > 24 {
			return fmt.Errorf("rabin average bits %d outside 8..24", c.AverageBits)
		}
		if c.Polynomial == 0 || c.Polynomial >= 1<<54 || c.Size != 0 {
			return fmt.Errorf("rabin polynomial %#x is invalid", c.Polynomial)
		}
	default:
		return fmt.Errorf("unknown chunking algorithm %q", c.Algorithm)
	}
	return nil
}

// Manifest is the signed description of one /usr image. It is the DSSE payload of the envelope;
// the chunk table it names by hash is parsed into Chunks once the signature verified.
type Manifest struct {
	FormatVersion   int       `json:"formatVersion"`
	AppID           string    `json:"appId"`
	Board           string    `json:"board"`
	Version         string    `json:"version"`
	SecurityVersion uint64    `json:"securityVersion"`
	Created         time.Time `json:"created"`
	ImageSize       int64     `json:"imageSize"`
	ImageSHA256     Digest    `json:"imageSha256"`
	Chunking        Chunking  `json:"chunking"`
	ChunkCount      int       `json:"chunkCount"`
	TableSize       int64     `json:"tableSize"`
	TableSHA256     Digest    `json:"tableSha256"`
	DataSize        int64     `json:"dataSize"`
	// Deltas lists the delta sections (format version 2 only; see delta.go).
	Deltas []DeltaRef `json:"deltas,omitempty"`

	// Chunks is the decoded chunk table. It is filled by File.Verify (after the table matched
	// TableSHA256) and is not part of the JSON.
	Chunks []Chunk `json:"-"`
}

// parseManifest decodes and checks the manifest JSON (the DSSE payload). It makes no trust decision.
func parseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, reject(ReasonLengthOverflow, "manifest is %d bytes, limit %d", len(b), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, rejectErr(ReasonMalformed, err, "decode manifest")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, reject(ReasonMalformed, "trailing data after the manifest")
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) check() error {
	switch {
	case m.FormatVersion != FormatVersion && m.FormatVersion != FormatVersionDelta:
		return reject(ReasonMalformed, "manifest format version %d is not supported (this build reads %d and %d); update the updater",
			m.FormatVersion, FormatVersion, FormatVersionDelta)
	case m.FormatVersion == FormatVersion && len(m.Deltas) > 0:
		return reject(ReasonMalformed, "a version %d manifest lists delta sections (they need version %d)", FormatVersion, FormatVersionDelta)
	case m.FormatVersion == FormatVersionDelta && len(m.Deltas) == 0:
		return reject(ReasonMalformed, "a version %d manifest lists no delta section (payloads without them are version %d)", FormatVersionDelta, FormatVersion)
	case len(m.Deltas) > MaxDeltas:
		return reject(ReasonLengthOverflow, "%d delta sections exceed the limit %d", len(m.Deltas), MaxDeltas)
	}
	for _, f := range []struct{ name, v string }{{"appId", m.AppID}, {"board", m.Board}, {"version", m.Version}} {
		if err := checkField(f.name, f.v); err != nil {
			return err
		}
	}
	switch {
	case m.ImageSize <= 0 || m.ImageSize > MaxImageSize:
		return reject(ReasonLengthOverflow, "image size %d outside 1..%d", m.ImageSize, int64(MaxImageSize))
	case m.ChunkCount <= 0 || m.ChunkCount > MaxChunks:
		return reject(ReasonLengthOverflow, "chunk count %d outside 1..%d (an installer's memory is bounded); rebuild the payload with larger chunks", m.ChunkCount, MaxChunks)
	case m.TableSize != int64(m.ChunkCount)*TableEntrySize:
		return reject(ReasonMalformed, "table size %d does not hold %d chunks", m.TableSize, m.ChunkCount)
	case m.DataSize < 0 || m.DataSize > MaxDataSize:
		return reject(ReasonLengthOverflow, "data size %d outside 0..%d", m.DataSize, int64(MaxDataSize))
	}
	if err := m.Chunking.check(); err != nil {
		return rejectErr(ReasonMalformed, err, "manifest chunking")
	}
	for i, d := range m.Deltas {
		if err := d.check(i, m.DataSize); err != nil {
			return err
		}
	}
	return nil
}

func checkField(name, v string) error {
	if v == "" {
		return reject(ReasonMalformed, "manifest %s is empty", name)
	}
	if len(v) > MaxStringField {
		return reject(ReasonLengthOverflow, "manifest %s is %d bytes, limit %d", name, len(v), MaxStringField)
	}
	for _, r := range v {
		if !unicode.IsPrint(r) || r == ' ' {
			return reject(ReasonMalformed, "manifest %s %q has a space or non-printable character", name, v)
		}
	}
	return nil
}

func (m *Manifest) marshal() ([]byte, error) {
	return json.Marshal(m)
}
