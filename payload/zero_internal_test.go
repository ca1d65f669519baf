package payload

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestZeroSums checks the sums of runs of zeros, hashed on from shorter runs, against hashing
// each run whole: lengths on both sides of the hashing block and the probe.
func TestZeroSums(t *testing.T) {
	lengths := []uint32{0, 1, ProbeSize - 1, ProbeSize, len64k - 1, len64k, len64k, len64k + 1, 200_003, 1 << 20}
	var h zeroHasher
	for _, n := range lengths {
		want := sha256.Sum256(make([]byte, n))
		h.hashTo(n)
		if got := h.sum(); got != want {
			t.Fatalf("%d zeros hashed on: %x, want %x", n, got, want)
		}
		sum, p := zeroSums{}.sum(n)
		if sum != want || p != probe(make([]byte, n)) {
			t.Fatalf("%d zeros: sum %x probe %x", n, sum, p)
		}
	}
}

const len64k = uint32(len(zeroBlock))

// TestCheckZeroChunks gives the check zero chunks out of length order, with repeats, and then
// one whose hash is that of a run one byte shorter: that one is refused, by its offset.
func TestCheckZeroChunks(t *testing.T) {
	var chunks []Chunk
	var off int64
	for _, n := range []uint32{1 << 20, 4096, 70_000, 4096, 1 << 20, 3} {
		chunks = append(chunks, Chunk{Offset: off, Length: n, Encoding: EncodingZero, SHA256: sha256.Sum256(make([]byte, n))},
			Chunk{Offset: off + int64(n), Length: 1, Encoding: EncodingRaw})
		off += int64(n) + 1
	}
	in := &installer{m: &Manifest{Chunks: chunks}}
	if err := in.checkZeroChunks(); err != nil {
		t.Fatal(err)
	}
	chunks[4].SHA256 = sha256.Sum256(make([]byte, 69_999)) // the 70,000-byte zero chunk
	err := in.checkZeroChunks()
	var re *RejectError
	if want := fmt.Sprintf("zero chunk at %d ", chunks[4].Offset); !errors.As(err, &re) || re.Reason != ReasonChunkHash || !strings.Contains(re.Detail, want) {
		t.Fatalf("got %v, want a chunk-hash rejection of the %s", err, want)
	}
}
