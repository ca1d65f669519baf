package payload

import (
	"crypto/sha256"
	"errors"
	"testing"
)

// validDelta is a small well-formed section: 3 MiB image, 2 MiB base.
func validDelta() ([]DeltaOp, DeltaRef) {
	ops := []DeltaOp{
		{Kind: DeltaCopy, Length: 1 << 20, SourceOffset: 4096, SourceLength: 1 << 20},
		{Kind: DeltaZero, Length: 1 << 19, SHA256: sha256.Sum256(make([]byte, 1<<19))},
		{Kind: DeltaPatch, Length: 1 << 19, SourceOffset: 1 << 20, SourceLength: 1 << 20, DataLength: 100},
		{Kind: DeltaZstd, Length: 1 << 19, DataLength: 200},
		{Kind: DeltaRaw, Length: 1 << 19, DataLength: 1 << 19},
	}
	var off, data int64
	for i := range ops {
		ops[i].Offset, ops[i].DataOffset = off, data
		off += int64(ops[i].Length)
		data += int64(ops[i].DataLength)
	}
	return ops, DeltaRef{BaseVersion: "1.0.0", BaseSize: 2 << 20, Offset: 0, Length: data + int64(len(ops))*DeltaOpSize, OpCount: len(ops)}
}

const validDeltaImage = 3 << 20

func TestParseDeltaIndex(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(ops []DeltaOp, d *DeltaRef)
		size   int64
		reason Reason
	}{
		{"gap between ops", func(ops []DeltaOp, d *DeltaRef) { ops[1].Offset++ }, 0, ReasonMalformed},
		{"op longer than the limit", func(ops []DeltaOp, d *DeltaRef) { ops[0].Length = MaxDeltaOpSize + 1 }, 0, ReasonLengthOverflow},
		{"empty op", func(ops []DeltaOp, d *DeltaRef) { ops[1].Length = 0 }, 0, ReasonLengthOverflow},
		{"unknown kind", func(ops []DeltaOp, d *DeltaRef) { ops[1].Kind = 9 }, 0, ReasonMalformed},
		{"copy source past the base", func(ops []DeltaOp, d *DeltaRef) { ops[0].SourceOffset = 2<<20 - 4095 }, 0, ReasonLengthOverflow},
		{"copy source length differs", func(ops []DeltaOp, d *DeltaRef) { ops[0].SourceLength-- }, 0, ReasonMalformed},
		{"patch dictionary too large", func(ops []DeltaOp, d *DeltaRef) { ops[2].SourceLength = MaxDeltaDict + 1 }, 0, ReasonLengthOverflow},
		{"patch without dictionary", func(ops []DeltaOp, d *DeltaRef) { ops[2].SourceLength = 0 }, 0, ReasonLengthOverflow},
		{"zero op with a source", func(ops []DeltaOp, d *DeltaRef) { ops[1].SourceOffset = 5 }, 0, ReasonMalformed},
		{"zero op stores bytes", func(ops []DeltaOp, d *DeltaRef) { ops[1].DataLength = 1 }, 0, ReasonMalformed},
		{"zstd op stores more than its bound", func(ops []DeltaOp, d *DeltaRef) { ops[3].DataLength = zstdBound(ops[3].Length) + 1 }, 0, ReasonLengthOverflow},
		{"raw op stores other than its length", func(ops []DeltaOp, d *DeltaRef) { ops[4].DataLength-- }, 0, ReasonMalformed},
		{"stored bytes past the section", func(ops []DeltaOp, d *DeltaRef) { d.Length -= 1 << 19 }, 0, ReasonLengthOverflow},
		{"section holds more than the ops store", func(ops []DeltaOp, d *DeltaRef) { d.Length++ }, 0, ReasonMalformed},
		{"ops cover less than the image", nil, validDeltaImage + 1, ReasonMalformed},
		{"ops run past the image", nil, validDeltaImage - 1, ReasonLengthOverflow},
		{"reserved bytes set", nil, -1, ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			ops, d := validDelta()
			if c.change != nil {
				c.change(ops, &d)
			}
			size := int64(validDeltaImage)
			if c.size > 0 {
				size = c.size
			}
			b := marshalDeltaIndex(ops)
			if c.size < 0 {
				b[DeltaOpSize+2] = 1
			}
			_, err := parseDeltaIndex(b, d, size)
			if r, ok := IsRejection(err); !ok || r != c.reason {
				t.Fatalf("got %v, want a %s rejection", err, c.reason)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		ops, d := validDelta()
		got, err := parseDeltaIndex(marshalDeltaIndex(ops), d, validDeltaImage)
		if err != nil {
			t.Fatal(err)
		}
		for i := range ops {
			if got[i] != ops[i] {
				t.Fatalf("op %d: got %+v, want %+v", i, got[i], ops[i])
			}
		}
	})
}

func TestDeltaRefLimits(t *testing.T) {
	base := func() *Manifest {
		_, d := validDelta()
		return &Manifest{FormatVersion: FormatVersionDelta, AppID: DefaultAppID, Board: "amd64-usr", Version: "2",
			ImageSize: validDeltaImage, Chunking: DefaultChunking, ChunkCount: 1, TableSize: TableEntrySize, DataSize: d.Length,
			Deltas: []DeltaRef{d}}
	}
	for _, c := range []struct {
		name   string
		change func(m *Manifest)
		reason Reason
	}{
		{"version 1 with sections", func(m *Manifest) { m.FormatVersion = FormatVersion }, ReasonMalformed},
		{"version 2 without sections", func(m *Manifest) { m.Deltas = nil }, ReasonMalformed},
		{"version 3", func(m *Manifest) { m.FormatVersion = 3 }, ReasonMalformed},
		{"too many sections", func(m *Manifest) {
			for len(m.Deltas) <= MaxDeltas {
				m.Deltas = append(m.Deltas, m.Deltas[0])
			}
		}, ReasonLengthOverflow},
		{"too many ops", func(m *Manifest) { m.Deltas[0].OpCount = MaxDeltaOps + 1 }, ReasonLengthOverflow},
		{"no ops", func(m *Manifest) { m.Deltas[0].OpCount = 0 }, ReasonLengthOverflow},
		{"section past the data", func(m *Manifest) { m.Deltas[0].Offset = 1 }, ReasonLengthOverflow},
		{"section shorter than its index", func(m *Manifest) { m.Deltas[0].Length = DeltaOpSize }, ReasonLengthOverflow},
		{"negative offset", func(m *Manifest) { m.Deltas[0].Offset = -1 }, ReasonLengthOverflow},
		{"base too large", func(m *Manifest) { m.Deltas[0].BaseSize = MaxImageSize + 1 }, ReasonLengthOverflow},
		{"base version with a space", func(m *Manifest) { m.Deltas[0].BaseVersion = "1 0" }, ReasonMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := base()
			c.change(m)
			err := m.check()
			if r, ok := IsRejection(err); !ok || r != c.reason {
				t.Fatalf("got %v, want a %s rejection", err, c.reason)
			}
		})
	}
	if err := base().check(); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	if !errors.Is(base().check(), nil) {
		t.Fatal("unreachable")
	}
}
