package payload

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// BuildOptions describe the payload Build makes.
type BuildOptions struct {
	AppID           string // default DefaultAppID
	Board           string // required, e.g. "amd64-usr"
	Version         string // required
	SecurityVersion uint64
	Created         time.Time // recorded in the manifest (pass the clock's now)
	Chunking        Chunking  // default DefaultChunking
	// Level is the zstd level; default zstd.SpeedDefault.
	Level zstd.EncoderLevel
	// EnvelopeArea is the room reserved for the envelope; default DefaultEnvelopeArea.
	EnvelopeArea int
	// Workers compress in parallel; default GOMAXPROCS.
	Workers int
	// Progress, if set, is called with image bytes done so far.
	Progress func(done, total int64)
	// DeltaFrom lists older images (at most MaxDeltas) to add a delta section for each: a host
	// whose active slot holds one of them fetches only that section (format version 2). Their
	// ops are compressed at DeltaLevel (default zstd.SpeedBestCompression).
	DeltaFrom  []DeltaBase
	DeltaLevel zstd.EncoderLevel
}

// Build reads the size-byte image from image and writes an unsigned payload to path (through a
// temporary file renamed at the end). Sign it afterwards with Sign.
func Build(ctx context.Context, image io.ReaderAt, size int64, o BuildOptions, path string) (*Manifest, error) {
	if o.AppID == "" {
		o.AppID = DefaultAppID
	}
	// One form of an app id everywhere: a lower-case UUID without braces ({3C2B…} as Flatcar
	// writes it is the same app).
	app, err := omaha.ParseAppID(o.AppID)
	if err != nil {
		return nil, fmt.Errorf("build: app id: %w", err)
	}
	o.AppID = app
	if o.Chunking.Algorithm == "" {
		o.Chunking = DefaultChunking
	}
	if o.Level == 0 {
		o.Level = zstd.SpeedDefault
	}
	if o.EnvelopeArea == 0 {
		o.EnvelopeArea = DefaultEnvelopeArea
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.EnvelopeArea < 4096 || o.EnvelopeArea > MaxEnvelopeArea {
		return nil, fmt.Errorf("build: envelope area %d outside 4096..%d", o.EnvelopeArea, MaxEnvelopeArea)
	}
	if size <= 0 || size > MaxImageSize {
		return nil, fmt.Errorf("build: image size %d outside 1..%d", size, int64(MaxImageSize))
	}
	if len(o.DeltaFrom) > MaxDeltas {
		return nil, fmt.Errorf("build: %d delta bases exceed the limit %d", len(o.DeltaFrom), MaxDeltas)
	}
	if o.DeltaLevel == 0 {
		o.DeltaLevel = zstd.SpeedBestCompression
	}
	m := &Manifest{
		FormatVersion: FormatVersion, AppID: o.AppID, Board: o.Board, Version: o.Version,
		SecurityVersion: o.SecurityVersion, Created: o.Created.UTC().Truncate(time.Second),
		ImageSize: size, Chunking: o.Chunking,
	}
	// Check the fields now with placeholder counts, so a bad board or version fails before the work.
	probe := *m
	probe.ChunkCount, probe.TableSize = 1, TableEntrySize
	if err := probe.check(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	err = atomicfile.Write(path, 0o644, func(out *os.File) error {
		return build(ctx, image, size, o, m, out)
	})
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", path, err)
	}
	return m, nil
}

type buildJob struct {
	data []byte
	enc  Encoding
	sum  [32]byte
	dup  bool   // same content as an earlier chunk: point at its stored bytes
	zero bool   // all zero: nothing stored
	out  []byte // encoded bytes (zstd or raw) once done
	done chan struct{}
}

// maxZeroChunk is the longest zero chunk Build writes. Installers read a chunk back into a
// buffer of max(1 MiB, the chunking's maximum) bytes, so a longer one would not fit there.
const maxZeroChunk = 1 << 20

// zeroSums caches the SHA-256 and probe of runs of zeros by length.
type zeroSums map[uint32]zeroSum

type zeroSum struct {
	sha   [32]byte
	probe uint32
}

func (z zeroSums) sum(n uint32) ([32]byte, uint32) {
	v, ok := z[n]
	if !ok {
		v = zeroSum{zeroSHA(n), probe(zeroBlock[:min(n, ProbeSize)])}
		z[n] = v
	}
	return v.sha, v.probe
}

// zeroSHA is the SHA-256 of n zero bytes.
func zeroSHA(n uint32) [32]byte {
	var h zeroHasher
	h.hashTo(n)
	return h.sum()
}

// zeroBlock is what runs of zeros are hashed from.
var zeroBlock [64 << 10]byte

// zeroHasher hashes a growing run of zeros: the sums of several lengths cost one pass over the
// longest of them.
type zeroHasher struct {
	h hash.Hash
	n uint32
}

// hashTo extends the run to n zeros (n is at least the length so far).
func (z *zeroHasher) hashTo(n uint32) {
	if z.h == nil {
		z.h = sha256.New()
	}
	for z.n < n {
		k := min(n-z.n, uint32(len(zeroBlock)))
		z.h.Write(zeroBlock[:k])
		z.n += k
	}
}

// sum is the SHA-256 of the run so far.
func (z *zeroHasher) sum() (s [32]byte) {
	z.h.Sum(s[:0])
	return s
}

func build(ctx context.Context, image io.ReaderAt, size int64, o BuildOptions, m *Manifest, out *os.File) error {
	h := header{Version: FormatVersion, EnvelopeArea: uint32(o.EnvelopeArea)}
	if len(o.DeltaFrom) > 0 {
		h.Version, m.FormatVersion = FormatVersionDelta, FormatVersionDelta
	}
	if _, err := out.Seek(h.dataOffset(), io.SeekStart); err != nil {
		return err
	}
	cut, err := o.Chunking.newCutter(bufio.NewReaderSize(io.NewSectionReader(image, 0, size), 1<<20))
	if err != nil {
		return err
	}

	// Pipeline: the reader cuts and hashes in order; workers compress; the writer stores in order.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *buildJob, o.Workers)
	ordered := make(chan *buildJob, 4*o.Workers)
	var imageSum [32]byte
	readErr := make(chan error, 1)
	go func() {
		defer close(ordered)
		defer close(work)
		full := sha256.New()
		seen := map[[32]byte]bool{}
		buf := make([]byte, o.Chunking.maxLen())
		for {
			data, err := cut.Next(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				readErr <- fmt.Errorf("read image: %w", err)
				return
			}
			full.Write(data)
			j := &buildJob{data: append([]byte(nil), data...), sum: sha256.Sum256(data), done: make(chan struct{})}
			switch {
			case allZero(j.data):
				j.zero = true
				close(j.done)
			case seen[j.sum]:
				j.dup = true
				close(j.done)
			default:
				seen[j.sum] = true
				select {
				case work <- j:
				case <-ctx.Done():
					readErr <- ctx.Err()
					return
				}
			}
			select {
			case ordered <- j:
			case <-ctx.Done():
				readErr <- ctx.Err()
				return
			}
		}
		copy(imageSum[:], full.Sum(nil))
		readErr <- nil
	}()
	for range o.Workers {
		go func() {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(o.Level), zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
			if err != nil {
				panic(err) // only for invalid options, which are constants here
			}
			defer enc.Close()
			for j := range work {
				z := enc.EncodeAll(j.data, make([]byte, 0, len(j.data)/2))
				if len(z) < len(j.data) {
					j.enc, j.out = EncodingZstd, z
				} else {
					j.enc, j.out = EncodingRaw, j.data
				}
				close(j.done)
			}
		}()
	}

	w := bufio.NewWriterSize(out, 1<<20)
	type stored struct {
		off int64
		n   uint32
		enc Encoding
	}
	where := map[[32]byte]stored{}
	zeros := zeroSums{}
	var chunks []Chunk
	var imgOff, dataOff int64
	for j := range ordered {
		select {
		case <-j.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		c := Chunk{Offset: imgOff, Length: uint32(len(j.data)), SHA256: j.sum, Encoding: j.enc, Probe: probe(j.data)}
		switch {
		case j.zero && len(chunks) > 0 && chunks[len(chunks)-1].Encoding == EncodingZero &&
			int(chunks[len(chunks)-1].Length)+len(j.data) <= maxZeroChunk:
			// A run of zeros is one table entry (up to maxZeroChunk), not one per cut: the
			// chunker cuts zeros at its minimum size, and every entry costs each host 64 bytes.
			last := &chunks[len(chunks)-1]
			last.Length += uint32(len(j.data))
			last.SHA256, last.Probe = zeros.sum(last.Length)
			imgOff += int64(len(j.data))
			if o.Progress != nil {
				o.Progress(imgOff, size)
			}
			continue
		case j.zero:
			c.Encoding = EncodingZero
		case j.dup:
			s := where[j.sum]
			c.Encoding, c.DataOffset, c.DataLength = s.enc, s.off, s.n
		default:
			if _, err := w.Write(j.out); err != nil {
				return err
			}
			c.DataOffset, c.DataLength = dataOff, uint32(len(j.out))
			where[j.sum] = stored{dataOff, c.DataLength, c.Encoding}
			dataOff += int64(len(j.out))
		}
		chunks = append(chunks, c)
		if len(chunks) > MaxChunks {
			return fmt.Errorf("image needs more than %d chunks; use a larger chunk size", MaxChunks)
		}
		imgOff += int64(len(j.data))
		if o.Progress != nil {
			o.Progress(imgOff, size)
		}
	}
	if err := <-readErr; err != nil {
		return err
	}
	if imgOff != size {
		return fmt.Errorf("read %d image bytes, want %d", imgOff, size)
	}
	// The delta sections follow the chunks' stored bytes in the data section.
	do := o
	do.Level = o.DeltaLevel
	for _, base := range o.DeltaFrom {
		ref, err := writeDelta(ctx, image, chunks, base, do, w)
		if err != nil {
			return err
		}
		ref.Offset = dataOff
		dataOff += ref.Length
		m.Deltas = append(m.Deltas, ref)
	}
	table := marshalTable(chunks)
	if _, err := w.Write(table); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	m.ImageSHA256 = imageSum
	m.ChunkCount = len(chunks)
	m.TableSize = int64(len(table))
	m.TableSHA256 = sha256.Sum256(table)
	m.DataSize = dataOff
	m.Chunks = chunks
	if err := m.check(); err != nil {
		return err
	}
	body, err := m.marshal()
	if err != nil {
		return err
	}
	eb, err := json.Marshal(dsse.Envelope{PayloadType: PayloadType, Payload: base64.StdEncoding.EncodeToString(body), Signatures: []dsse.Signature{}})
	if err != nil {
		return err
	}
	if len(eb) > o.EnvelopeArea {
		return fmt.Errorf("unsigned envelope of %d bytes does not fit the %d-byte envelope area", len(eb), o.EnvelopeArea)
	}
	h.EnvelopeLen = uint32(len(eb))
	h.DataLen = uint64(dataOff)
	h.TableLen = uint64(len(table))
	head := make([]byte, HeaderSize+o.EnvelopeArea)
	copy(head, h.marshal())
	copy(head[HeaderSize:], eb)
	if _, err := out.WriteAt(head, 0); err != nil {
		return err
	}
	return nil
}
