package payload

import (
	"encoding/binary"
	"hash/crc32"
	"math"
)

// Format constants. See doc.go for the byte-by-byte layout.
const (
	// Magic opens every payload file.
	Magic = "TWINSLOT"
	// FormatVersion is the version of the container layout (header, envelope area, data, table)
	// and of the manifest schema. Readers refuse other versions.
	FormatVersion = 1
	// FormatVersionDelta is the version of a payload that carries delta sections (delta.go): the
	// same layout, and a manifest that lists them. A payload without them stays version 1, so
	// that older installers read it; readers accept both.
	FormatVersionDelta = 2
	// HeaderSize is the fixed header length in bytes.
	HeaderSize = 48
	// TableEntrySize is the length of one chunk-table record in bytes.
	TableEntrySize = 64
	// PayloadType is the DSSE payloadType of the manifest.
	PayloadType = "application/vnd.twinslot.manifest+json"
	// DefaultAppID is twinslot's Omaha application id (without braces; Omaha adds them).
	DefaultAppID = "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc"
	// DefaultEnvelopeArea is the room Build reserves for the envelope so that signatures can be
	// added without growing the file in most cases: 8 KiB holds an envelope with a dozen signatures; a host reads the whole area on every
	// install, delta or not, so it is kept small (Sign grows it when it must).
	DefaultEnvelopeArea = 8 << 10
)

// Limits on untrusted input. Every length read from a payload is checked against these before it
// is used to allocate or to compute an offset.
const (
	MaxEnvelopeArea  = 1 << 20   // envelope area in the header
	MaxManifestSize  = 256 << 10 // decoded DSSE payload (manifest JSON)
	MaxSignatures    = 32        // signatures per envelope
	MaxSignatureSize = 8 << 10   // one decoded signature
	MaxKeyIDSize     = 128       // one key id string
	// MaxChunks bounds the chunks of one image, and with them an installer's memory (about 100
	// bytes a chunk: its table entry, its place in the plan and the read-back), so that an
	// install stays within the agent's 64 MiB: a 2 GiB ext4 image cuts into about 60,000
	// chunks with DefaultChunking, and 131,072 is 2 GiB cut into 16 KiB chunks. Earlier readers
	// allowed 2^20.
	MaxChunks        = 1 << 17
	MaxChunkSize     = 16 << 20 // one chunk, decoded
	MaxImageSize     = 1 << 40  // 1 TiB
	MaxDataSize      = 1 << 41  // data section
	MaxStringField   = 256      // app id, board, version, …
	maxZstdOverhead  = 1 << 10  // stored zstd frame may exceed its decoded size by this much (+1/128)
	maxTrustRootSize = 1 << 20
	maxTrustRootKeys = 64
	maxPublicKeyPEM  = 16 << 10
)

// Encoding says how a chunk's bytes are stored in the data section.
type Encoding uint8

// Chunk encodings.
const (
	EncodingZero Encoding = 0 // all zero bytes, nothing stored
	EncodingRaw  Encoding = 1 // stored as is
	EncodingZstd Encoding = 2 // one zstd frame
)

func (e Encoding) String() string {
	switch e {
	case EncodingZero:
		return "zero"
	case EncodingRaw:
		return "raw"
	case EncodingZstd:
		return "zstd"
	}
	return "unknown"
}

// header is the fixed 48-byte file header.
type header struct {
	Version      uint16
	Flags        uint16
	EnvelopeLen  uint32 // bytes of envelope JSON at the start of the envelope area
	EnvelopeArea uint32 // bytes reserved for the envelope (JSON + zero padding)
	DataLen      uint64
	TableLen     uint64
}

func (h header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[8:], h.Version)
	binary.BigEndian.PutUint16(b[10:], h.Flags)
	binary.BigEndian.PutUint32(b[12:], h.EnvelopeLen)
	binary.BigEndian.PutUint32(b[16:], h.EnvelopeArea)
	// b[20:24] reserved, zero
	binary.BigEndian.PutUint64(b[24:], h.DataLen)
	binary.BigEndian.PutUint64(b[32:], h.TableLen)
	// b[40:48] reserved, zero
	return b
}

// parseHeader checks b (HeaderSize bytes) and returns the header. It checks every length against
// its limit but not against the file size (see header.fileSize).
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < HeaderSize {
		return h, reject(ReasonTruncated, "file is %d bytes, shorter than the %d-byte header", len(b), HeaderSize)
	}
	if string(b[:8]) != Magic {
		return h, reject(ReasonMalformed, "not a twinslot payload (magic %q)", b[:8])
	}
	h.Version = binary.BigEndian.Uint16(b[8:])
	h.Flags = binary.BigEndian.Uint16(b[10:])
	h.EnvelopeLen = binary.BigEndian.Uint32(b[12:])
	h.EnvelopeArea = binary.BigEndian.Uint32(b[16:])
	h.DataLen = binary.BigEndian.Uint64(b[24:])
	h.TableLen = binary.BigEndian.Uint64(b[32:])
	if h.Version != FormatVersion && h.Version != FormatVersionDelta {
		return h, reject(ReasonMalformed, "format version %d is not supported (this build reads versions %d and %d); update the updater", h.Version, FormatVersion, FormatVersionDelta)
	}
	if h.Flags != 0 || !allZero(b[20:24]) || !allZero(b[40:48]) {
		return h, reject(ReasonMalformed, "reserved header bits are set")
	}
	switch {
	case h.EnvelopeArea > MaxEnvelopeArea:
		return h, reject(ReasonLengthOverflow, "envelope area %d bytes exceeds the limit %d", h.EnvelopeArea, MaxEnvelopeArea)
	case h.EnvelopeLen > h.EnvelopeArea:
		return h, reject(ReasonLengthOverflow, "envelope length %d exceeds its area %d", h.EnvelopeLen, h.EnvelopeArea)
	case h.EnvelopeLen == 0:
		return h, reject(ReasonMalformed, "empty envelope")
	case h.DataLen > MaxDataSize:
		return h, reject(ReasonLengthOverflow, "data section %d bytes exceeds the limit %d", h.DataLen, uint64(MaxDataSize))
	case h.TableLen > MaxChunks*TableEntrySize:
		return h, reject(ReasonLengthOverflow, "chunk table of %d chunks exceeds the limit of %d chunks (an installer's memory is bounded); rebuild the payload with larger chunks",
			h.TableLen/TableEntrySize, MaxChunks)
	case h.TableLen%TableEntrySize != 0:
		return h, reject(ReasonMalformed, "chunk table length %d is not a multiple of %d", h.TableLen, TableEntrySize)
	}
	return h, nil
}

// dataOffset is the file offset of the data section.
func (h header) dataOffset() int64 { return HeaderSize + int64(h.EnvelopeArea) }

// tableOffset is the file offset of the chunk table.
func (h header) tableOffset() int64 { return h.dataOffset() + int64(h.DataLen) }

// fileSize is the exact size of a file with this header. The limits in parseHeader keep it far
// below MaxInt64, so it cannot overflow.
func (h header) fileSize() int64 { return h.tableOffset() + int64(h.TableLen) }

// allZero reports whether b holds only zero bytes, eight at a time.
func allZero(b []byte) bool {
	for len(b) >= 32 {
		if binary.LittleEndian.Uint64(b)|binary.LittleEndian.Uint64(b[8:])|
			binary.LittleEndian.Uint64(b[16:])|binary.LittleEndian.Uint64(b[24:]) != 0 {
			return false
		}
		b = b[32:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Chunk is one piece of the image: Length bytes at Offset whose SHA-256 is SHA256, stored with
// Encoding at [DataOffset, DataOffset+DataLength) of the data section. Several chunks may share
// stored bytes (identical content is stored once). Probe is the CRC-32C of the chunk's first
// min(ProbeSize, Length) bytes: a cheap filter an installer uses to skip hashing a region that
// cannot hold the chunk (a match is always confirmed by SHA256).
type Chunk struct {
	Offset     int64
	Length     uint32
	Encoding   Encoding
	DataOffset int64
	DataLength uint32
	Probe      uint32
	SHA256     [32]byte
}

// ProbeSize is how many leading bytes of a chunk Probe covers.
const ProbeSize = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func probe(b []byte) uint32 { return crc32.Checksum(b[:min(len(b), ProbeSize)], castagnoli) }

func (c Chunk) marshal(b []byte) {
	binary.BigEndian.PutUint64(b[0:], uint64(c.Offset))
	binary.BigEndian.PutUint32(b[8:], c.Length)
	b[12] = byte(c.Encoding)
	b[13], b[14], b[15] = 0, 0, 0
	binary.BigEndian.PutUint64(b[16:], uint64(c.DataOffset))
	binary.BigEndian.PutUint32(b[24:], c.DataLength)
	binary.BigEndian.PutUint32(b[28:], c.Probe)
	copy(b[32:64], c.SHA256[:])
}

func marshalTable(chunks []Chunk) []byte { return marshalEntries(chunks, TableEntrySize) }

// marshalEntries encodes fixed-size entries (chunk table entries, delta ops) one after another.
func marshalEntries[T interface{ marshal([]byte) }](entries []T, size int) []byte {
	b := make([]byte, len(entries)*size)
	for i, e := range entries {
		e.marshal(b[i*size:])
	}
	return b
}

// parseTable decodes and checks a chunk table: chunks are in image order, contiguous, non-empty,
// no longer than chunking makes them, cover exactly [0, imageSize), and each stored range lies
// inside a data section of dataLen bytes with a length that fits its encoding.
func parseTable(b []byte, imageSize int64, dataLen uint64, chunking Chunking) ([]Chunk, error) {
	if len(b)%TableEntrySize != 0 {
		return nil, reject(ReasonMalformed, "chunk table length %d is not a multiple of %d", len(b), TableEntrySize)
	}
	n := len(b) / TableEntrySize
	if n > MaxChunks {
		return nil, reject(ReasonLengthOverflow, "%d chunks exceed the limit %d", n, MaxChunks)
	}
	p := newTableParser(n, imageSize, dataLen, chunking)
	if err := p.add(b); err != nil {
		return nil, err
	}
	return p.finish()
}

// tableParser decodes a chunk table piece by piece (see parseTable for the checks), so that a
// reader need not hold the table's bytes and its chunks at once.
type tableParser struct {
	imageSize int64
	dataLen   uint64
	// maxData and maxZero are the longest data and zero chunks the manifest's chunking makes
	// (Chunking.maxLen, maxZeroLen): the installer's buffers are sized by them.
	maxData, maxZero uint32
	next             int64
	chunks           []Chunk
}

func newTableParser(n int, imageSize int64, dataLen uint64, chunking Chunking) *tableParser {
	return &tableParser{imageSize: imageSize, dataLen: dataLen, maxData: uint32(chunking.maxLen()),
		maxZero: uint32(chunking.maxZeroLen()), chunks: make([]Chunk, 0, n)}
}

// add decodes whole entries; len(b) must be a multiple of TableEntrySize.
func (p *tableParser) add(b []byte) error {
	for len(b) >= TableEntrySize {
		if err := p.entry(b[:TableEntrySize]); err != nil {
			return err
		}
		b = b[TableEntrySize:]
	}
	return nil
}

func (p *tableParser) entry(e []byte) error {
	i := len(p.chunks)
	if i >= MaxChunks {
		return reject(ReasonLengthOverflow, "more than %d chunks", MaxChunks)
	}
	off := binary.BigEndian.Uint64(e[0:])
	c := Chunk{
		Length:     binary.BigEndian.Uint32(e[8:]),
		Encoding:   Encoding(e[12]),
		DataLength: binary.BigEndian.Uint32(e[24:]),
		Probe:      binary.BigEndian.Uint32(e[28:]),
	}
	doff := binary.BigEndian.Uint64(e[16:])
	copy(c.SHA256[:], e[32:64])
	if !allZero(e[13:16]) {
		return reject(ReasonMalformed, "chunk %d: reserved bytes are set", i)
	}
	if off != uint64(p.next) {
		return reject(ReasonMalformed, "chunk %d starts at %d, want %d (chunks must be contiguous)", i, off, p.next)
	}
	if c.Length == 0 || c.Length > MaxChunkSize {
		return reject(ReasonLengthOverflow, "chunk %d length %d outside 1..%d", i, c.Length, MaxChunkSize)
	}
	if doff > p.dataLen || uint64(c.DataLength) > p.dataLen-doff {
		return reject(ReasonLengthOverflow, "chunk %d data [%d,+%d) outside the %d-byte data section", i, doff, c.DataLength, p.dataLen)
	}
	switch c.Encoding {
	case EncodingZero:
		if c.DataLength != 0 {
			return reject(ReasonMalformed, "zero chunk %d stores %d bytes", i, c.DataLength)
		}
	case EncodingRaw:
		if c.DataLength != c.Length {
			return reject(ReasonMalformed, "raw chunk %d stores %d bytes for %d", i, c.DataLength, c.Length)
		}
	case EncodingZstd:
		if c.DataLength == 0 || c.DataLength > zstdBound(c.Length) {
			return reject(ReasonLengthOverflow, "zstd chunk %d stores %d bytes for %d", i, c.DataLength, c.Length)
		}
	default:
		return reject(ReasonMalformed, "chunk %d has unknown encoding %d", i, c.Encoding)
	}
	limit := p.maxData
	if c.Encoding == EncodingZero {
		limit = p.maxZero
	}
	if c.Length > limit {
		return reject(ReasonLengthOverflow, "chunk %d is %d bytes, longer than the manifest's chunking makes them (%d)", i, c.Length, limit)
	}
	c.Offset = p.next
	c.DataOffset = int64(doff)
	p.next += int64(c.Length)
	if p.next > p.imageSize {
		return reject(ReasonLengthOverflow, "chunk %d ends at %d, past the %d-byte image", i, p.next, p.imageSize)
	}
	p.chunks = append(p.chunks, c)
	return nil
}

// finish checks that the chunks cover the image and returns them.
func (p *tableParser) finish() ([]Chunk, error) {
	if p.next != p.imageSize {
		return nil, reject(ReasonMalformed, "chunks cover %d bytes of a %d-byte image", p.next, p.imageSize)
	}
	return p.chunks, nil
}

// zstdBound is the largest stored size accepted for a zstd chunk of n decoded bytes (Build stores
// a chunk raw when zstd does not shrink it, so real frames are smaller than n).
func zstdBound(n uint32) uint32 {
	b := uint64(n) + uint64(n)/128 + maxZstdOverhead
	return uint32(min(b, math.MaxUint32))
}
