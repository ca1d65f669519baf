package payload

import (
	"encoding/binary"
	"fmt"
)

// Delta sections (format version 2). A payload may carry, inside its data section, one delta
// section per base image it was built against (BuildOptions.DeltaFrom). A section rebuilds the
// target image from that base image: a list of ops, each writing one extent of the target, in
// target order and covering it exactly, followed by the stored bytes of the ops that need any.
//
//	section = stored bytes of the ops, in op order ‖ index (OpCount records of 64 bytes)
//
// An op record (all integers big-endian):
//
//	0   1  kind: 1 copy, 2 zero, 3 zstd, 4 patch, 5 raw
//	1   3  reserved = 0
//	4   4  length of the target extent (1..MaxDeltaOpSize)
//	8   8  target offset (ops are contiguous from 0 and cover imageSize exactly)
//	16  8  source offset in the base image (copy, patch; else 0)
//	24  4  source length (copy: = length; patch: 1..MaxDeltaDict; else 0)
//	28  4  stored length (copy, zero: 0; raw: = length; zstd, patch: 1..zstd bound of length)
//	32  32 SHA-256 of the target extent's bytes
//
// copy reads the base's source extent; zero writes zeros; zstd is one zstd frame; patch is one
// zstd frame compressed with the base's source extent as a raw dictionary (zstd's "patch from");
// raw is stored as is. An op's stored bytes sit right after those of the op before it (the
// first at the start of the section); the index ends the section, so that a builder writes the
// section in one pass. The signed manifest names each section (DeltaRef): the base
// image by version, size and SHA-256, where the section lies in the data section, its op count
// and the SHA-256 of its index. The index binds each op's target bytes by hash, so every byte an
// installer writes is covered by the signature transitively, whatever the base slot holds: a
// base that is not what the section was built from shows as an op whose bytes do not match,
// and the installer then falls back to the chunk path.

// Delta op kinds.
type DeltaKind uint8

// Delta op kinds, as stored.
const (
	DeltaCopy  DeltaKind = 1 // copy the base's source extent
	DeltaZero  DeltaKind = 2 // all zero bytes, nothing stored
	DeltaZstd  DeltaKind = 3 // one zstd frame
	DeltaPatch DeltaKind = 4 // one zstd frame against the base's source extent as raw dictionary
	DeltaRaw   DeltaKind = 5 // stored as is
)

func (k DeltaKind) String() string {
	switch k {
	case DeltaCopy:
		return "copy"
	case DeltaZero:
		return "zero"
	case DeltaZstd:
		return "zstd"
	case DeltaPatch:
		return "patch"
	case DeltaRaw:
		return "raw"
	}
	return "unknown"
}

// Limits on delta sections (untrusted input, checked before use).
const (
	// MaxDeltas bounds the delta sections of one payload.
	MaxDeltas = 16
	// MaxDeltaOps bounds the ops of one section (an installer holds them: about 100 bytes an op).
	MaxDeltaOps = 1 << 17
	// MaxDeltaOpSize bounds one op's target extent, and with it the buffers of an installer.
	MaxDeltaOpSize = 1 << 20
	// MaxDeltaDict bounds a patch op's source extent (its zstd dictionary).
	MaxDeltaDict = 2 << 20
	// DeltaOpSize is the length of one op record in bytes.
	DeltaOpSize = 64
)

// DeltaRef is the manifest's entry for one delta section.
type DeltaRef struct {
	BaseVersion string `json:"baseVersion"` // the base image's os-release VERSION_ID (or as given to Build)
	BaseSize    int64  `json:"baseSize"`    // bytes of the base image
	BaseSHA256  Digest `json:"baseSha256"`  // SHA-256 of the base image
	Offset      int64  `json:"offset"`      // section start, relative to the data section
	Length      int64  `json:"length"`      // section length: stored bytes and index
	OpCount     int    `json:"opCount"`
	IndexSHA256 Digest `json:"indexSha256"` // SHA-256 of the section's index (OpCount·64 bytes)
}

func (d DeltaRef) indexLen() int64 { return int64(d.OpCount) * DeltaOpSize }

// indexOffset is where the index starts, relative to the data section.
func (d DeltaRef) indexOffset() int64 { return d.Offset + d.Length - d.indexLen() }

// check checks d against the limits and a data section of dataLen bytes.
func (d DeltaRef) check(i int, dataLen int64) error {
	if err := checkField(fmt.Sprintf("deltas[%d].baseVersion", i), d.BaseVersion); err != nil {
		return err
	}
	switch {
	case d.BaseSize <= 0 || d.BaseSize > MaxImageSize:
		return reject(ReasonLengthOverflow, "delta %d: base size %d outside 1..%d", i, d.BaseSize, int64(MaxImageSize))
	case d.OpCount <= 0 || d.OpCount > MaxDeltaOps:
		return reject(ReasonLengthOverflow, "delta %d: %d ops outside 1..%d; rebuild the payload", i, d.OpCount, MaxDeltaOps)
	case d.Offset < 0 || d.Length < d.indexLen() || d.Offset > dataLen || d.Length > dataLen-d.Offset:
		return reject(ReasonLengthOverflow, "delta %d: section [%d,+%d) with a %d-byte index is not inside the %d-byte data section",
			i, d.Offset, d.Length, d.indexLen(), dataLen)
	}
	return nil
}

// DeltaOp is one op of a delta section: Length bytes at Offset of the target, made as Kind says,
// whose SHA-256 is SHA256. DataOffset is where its stored bytes start, relative to the section.
type DeltaOp struct {
	Kind         DeltaKind
	Length       uint32
	Offset       int64
	SourceOffset int64
	SourceLength uint32
	DataOffset   int64
	DataLength   uint32
	SHA256       [32]byte
}

func (o DeltaOp) marshal(b []byte) {
	b[0] = byte(o.Kind)
	b[1], b[2], b[3] = 0, 0, 0
	binary.BigEndian.PutUint32(b[4:], o.Length)
	binary.BigEndian.PutUint64(b[8:], uint64(o.Offset))
	binary.BigEndian.PutUint64(b[16:], uint64(o.SourceOffset))
	binary.BigEndian.PutUint32(b[24:], o.SourceLength)
	binary.BigEndian.PutUint32(b[28:], o.DataLength)
	copy(b[32:64], o.SHA256[:])
}

func marshalDeltaIndex(ops []DeltaOp) []byte { return marshalEntries(ops, DeltaOpSize) }

// parseDeltaIndex decodes and checks the index of section d of a payload whose image has
// imageSize bytes: ops contiguous from 0 covering the image, lengths within their limits and
// kinds, source extents inside the base image, stored bytes filling the section exactly.
func parseDeltaIndex(b []byte, d DeltaRef, imageSize int64) ([]DeltaOp, error) {
	if int64(len(b)) != d.indexLen() {
		return nil, reject(ReasonMalformed, "delta index is %d bytes, want %d", len(b), d.indexLen())
	}
	ops := make([]DeltaOp, 0, d.OpCount)
	var next int64
	var data int64
	for i := range d.OpCount {
		e := b[i*DeltaOpSize : (i+1)*DeltaOpSize]
		o := DeltaOp{
			Kind:         DeltaKind(e[0]),
			Length:       binary.BigEndian.Uint32(e[4:]),
			SourceLength: binary.BigEndian.Uint32(e[24:]),
			DataLength:   binary.BigEndian.Uint32(e[28:]),
		}
		off := binary.BigEndian.Uint64(e[8:])
		src := binary.BigEndian.Uint64(e[16:])
		copy(o.SHA256[:], e[32:64])
		if !allZero(e[1:4]) {
			return nil, reject(ReasonMalformed, "delta op %d: reserved bytes are set", i)
		}
		if off != uint64(next) {
			return nil, reject(ReasonMalformed, "delta op %d starts at %d, want %d (ops must be contiguous)", i, off, next)
		}
		if o.Length == 0 || o.Length > MaxDeltaOpSize {
			return nil, reject(ReasonLengthOverflow, "delta op %d: length %d outside 1..%d", i, o.Length, MaxDeltaOpSize)
		}
		var wantSrc, maxSrc uint32 // source length: exact (wantSrc) or 1..maxSrc
		var wantData, maxData uint32
		switch o.Kind {
		case DeltaCopy:
			wantSrc = o.Length
		case DeltaZero:
		case DeltaRaw:
			wantData = o.Length
		case DeltaZstd:
			maxData = zstdBound(o.Length)
		case DeltaPatch:
			maxSrc, maxData = MaxDeltaDict, zstdBound(o.Length)
		default:
			return nil, reject(ReasonMalformed, "delta op %d has unknown kind %d", i, o.Kind)
		}
		if err := checkOpLen(i, o.Kind, "source", o.SourceLength, wantSrc, maxSrc); err != nil {
			return nil, err
		}
		if o.SourceLength == 0 && src != 0 {
			return nil, reject(ReasonMalformed, "delta op %d (%s) has a source offset but no source", i, o.Kind)
		}
		if src > uint64(d.BaseSize) || uint64(o.SourceLength) > uint64(d.BaseSize)-src {
			return nil, reject(ReasonLengthOverflow, "delta op %d: source [%d,+%d) outside the %d-byte base image", i, src, o.SourceLength, d.BaseSize)
		}
		if err := checkOpLen(i, o.Kind, "stored", o.DataLength, wantData, maxData); err != nil {
			return nil, err
		}
		if int64(o.DataLength) > d.Length-d.indexLen()-data {
			return nil, reject(ReasonLengthOverflow, "delta op %d: stored bytes end past the %d-byte section", i, d.Length)
		}
		o.Offset, o.SourceOffset, o.DataOffset = next, int64(src), data
		data += int64(o.DataLength)
		next += int64(o.Length)
		if next > imageSize {
			return nil, reject(ReasonLengthOverflow, "delta op %d ends at %d, past the %d-byte image", i, next, imageSize)
		}
		ops = append(ops, o)
	}
	if next != imageSize {
		return nil, reject(ReasonMalformed, "delta ops cover %d bytes of a %d-byte image", next, imageSize)
	}
	if data != d.Length-d.indexLen() {
		return nil, reject(ReasonMalformed, "delta ops store %d bytes, the section holds %d besides its index", data, d.Length-d.indexLen())
	}
	return ops, nil
}

// checkOpLen checks the what ("source", "stored") length got of op i: within 1..maxLen when
// maxLen > 0, else exactly want.
func checkOpLen(i int, k DeltaKind, what string, got, want, maxLen uint32) error {
	if maxLen > 0 {
		if got == 0 || got > maxLen {
			return reject(ReasonLengthOverflow, "delta op %d (%s): %s length %d outside 1..%d", i, k, what, got, maxLen)
		}
	} else if got != want {
		return reject(ReasonMalformed, "delta op %d (%s): %s length %d, want %d", i, k, what, got, want)
	}
	return nil
}
