package payload

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func goldenSeed(t testing.TB) ([]byte, *TrustRoot) {
	b, err := os.ReadFile(filepath.Join("testdata", "v1.tsp"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := LoadTrustRoot(filepath.Join("testdata", "trust.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b, tr
}

// FuzzEnvelope feeds arbitrary files to Open and Verify: they must never panic, never allocate
// past the limits, and never accept a file the golden trust root did not sign.
func FuzzEnvelope(f *testing.F) {
	golden, tr := goldenSeed(f)
	f.Add(golden)
	if v2, err := os.ReadFile(filepath.Join("testdata", "v2-delta.tsp")); err == nil {
		f.Add(v2) // signed by another key: refused, after its manifest and sections were parsed
	}
	f.Add(golden[:HeaderSize])
	f.Add(golden[:len(golden)/2])
	short := bytes.Clone(golden[:HeaderSize+4096])
	binary.BigEndian.PutUint64(short[24:], 0)
	binary.BigEndian.PutUint64(short[32:], 0)
	f.Add(short)
	f.Fuzz(func(t *testing.T, b []byte) {
		pf, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("Open error is not a rejection: %v", err)
			}
			return
		}
		pf.Unverified()
		m, err := pf.Verify(tr, Expect{})
		if err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("Verify error is not a rejection: %v", err)
			}
			return
		}
		// Accepted: the signed parts must be the golden ones.
		if len(m.Chunks) != m.ChunkCount || m.Version != "0.0.1-golden" {
			t.Fatalf("accepted a manifest the golden key never signed: %+v", m)
		}
	})
}

// FuzzManifest feeds arbitrary manifest JSON and chunk tables to the parsers.
func FuzzManifest(f *testing.F) {
	golden, _ := goldenSeed(f)
	pf, err := Open(bytes.NewReader(golden), int64(len(golden)))
	if err != nil {
		f.Fatal(err)
	}
	table := golden[pf.hdr.tableOffset():]
	f.Add(pf.body, table)
	f.Add([]byte(`{"formatVersion":1}`), table[:TableEntrySize])
	f.Add(pf.body, []byte{})
	f.Fuzz(func(t *testing.T, manifest, table []byte) {
		m, err := parseManifest(manifest)
		if err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("not a rejection: %v", err)
			}
			return
		}
		chunks, err := parseTable(table, m.ImageSize, uint64(m.DataSize), m.Chunking)
		// Verify parses the table a piece at a time: pieces of any whole number of entries
		// must give what the whole table gives.
		if len(table)%TableEntrySize == 0 && len(table)/TableEntrySize <= MaxChunks {
			p := newTableParser(len(table)/TableEntrySize, m.ImageSize, uint64(m.DataSize), m.Chunking)
			var perr error
			for rest, k := table, 1; len(rest) > 0 && perr == nil; k = k%7 + 1 {
				n := min(len(rest), k*TableEntrySize)
				perr, rest = p.add(rest[:n]), rest[n:]
			}
			var pieces []Chunk
			if perr == nil {
				pieces, perr = p.finish()
			}
			if (perr == nil) != (err == nil) || err == nil && !slices.Equal(pieces, chunks) {
				t.Fatalf("piecewise parse (%v) differs from the whole (%v)", perr, err)
			}
		}
		if err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("not a rejection: %v", err)
			}
			return
		}
		var end int64
		for _, c := range chunks {
			if c.Offset != end || c.DataOffset+int64(c.DataLength) > m.DataSize {
				t.Fatalf("parseTable accepted an inconsistent chunk %+v", c)
			}
			end += int64(c.Length)
		}
		if end != m.ImageSize {
			t.Fatalf("chunks cover %d of %d", end, m.ImageSize)
		}
	})
}

func TestAllZero(t *testing.T) {
	for n := range 80 {
		b := make([]byte, n)
		if !allZero(b) {
			t.Fatalf("%d zero bytes: not all zero", n)
		}
		for i := range n {
			b[i] = 1
			if allZero(b) {
				t.Fatalf("byte %d of %d set: all zero", i, n)
			}
			b[i] = 0
		}
	}
}

// FuzzDeltaIndex feeds arbitrary delta indexes and section entries to the parser: it must never
// panic, and what it accepts must cover the image exactly, read sources inside the base and
// stored bytes inside the section.
func FuzzDeltaIndex(f *testing.F) {
	ops, d := validDelta()
	f.Add(marshalDeltaIndex(ops), d.BaseSize, d.Length, int64(validDeltaImage))
	f.Add(marshalDeltaIndex(ops[:1]), d.BaseSize, int64(DeltaOpSize), int64(1<<20))
	f.Add([]byte{}, int64(1), int64(0), int64(1))
	f.Fuzz(func(t *testing.T, index []byte, baseSize, length, imageSize int64) {
		if len(index)%DeltaOpSize != 0 || len(index) == 0 {
			index = append(index, make([]byte, DeltaOpSize-len(index)%DeltaOpSize)...)
		}
		ref := DeltaRef{BaseVersion: "1", BaseSize: baseSize, Length: length, OpCount: len(index) / DeltaOpSize}
		m := &Manifest{FormatVersion: FormatVersionDelta, AppID: DefaultAppID, Board: "b", Version: "2", ImageSize: imageSize,
			Chunking: DefaultChunking, ChunkCount: 1, TableSize: TableEntrySize, DataSize: max(length, 0), Deltas: []DeltaRef{ref}}
		if err := m.check(); err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("not a rejection: %v", err)
			}
			return
		}
		got, err := parseDeltaIndex(index, ref, imageSize)
		if err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("not a rejection: %v", err)
			}
			return
		}
		var end, data int64
		for _, o := range got {
			if o.Offset != end || o.Length == 0 || o.Length > MaxDeltaOpSize || o.DataOffset != data ||
				o.SourceOffset < 0 || o.SourceOffset+int64(o.SourceLength) > baseSize {
				t.Fatalf("accepted an inconsistent op %+v", o)
			}
			end += int64(o.Length)
			data += int64(o.DataLength)
		}
		if end != imageSize || data+ref.indexLen() != length {
			t.Fatalf("ops cover %d of %d and store %d of %d", end, imageSize, data, length-ref.indexLen())
		}
		if err := checkZeroOps(got); err != nil {
			if _, ok := IsRejection(err); !ok {
				t.Fatalf("not a rejection: %v", err)
			}
			return
		}
		zeroSum := map[uint32][32]byte{}
		for _, o := range got {
			if o.Kind != DeltaZero {
				continue
			}
			if _, ok := zeroSum[o.Length]; !ok {
				zeroSum[o.Length] = sha256.Sum256(make([]byte, o.Length))
			}
			if o.SHA256 != zeroSum[o.Length] {
				t.Fatalf("accepted zero op %+v whose hash is not that of zeros", o)
			}
		}
	})
}
