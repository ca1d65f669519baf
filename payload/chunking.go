package payload

import (
	"fmt"
	"io"
	"sync"

	"github.com/restic/chunker"
)

// DefaultPolynomial is the irreducible Rabin polynomial (degree 53) twinslot builds with. It need
// not be secret; keeping it fixed makes builds reproducible.
const DefaultPolynomial = 0x2f39f238c08281

// DefaultChunking is the chunking Build uses unless told otherwise: content-defined (Rabin) with
// 16 KiB minimum, about 64 KiB average and 256 KiB maximum, chosen by BenchmarkChunking
// (bench_delta_test.go; the numbers are in doc.go § Chunking).
var DefaultChunking = Chunking{Algorithm: ChunkingRabin, Min: 16 << 10, Max: 256 << 10, AverageBits: 16, Polynomial: DefaultPolynomial}

// FixedChunking returns fixed-size chunking of size bytes.
func FixedChunking(size int) Chunking { return Chunking{Algorithm: ChunkingFixed, Size: size} }

// maxLen is the largest chunk c produces.
func (c Chunking) maxLen() int {
	if c.Algorithm == ChunkingFixed {
		return c.Size
	}
	return c.Max
}

// maxZeroLen is the largest zero chunk a table with chunking c may hold: Build joins runs of
// zeros up to maxZeroChunk, and a fixed chunk of zeros may be longer.
func (c Chunking) maxZeroLen() int { return max(c.maxLen(), maxZeroChunk) }

// cutter cuts a stream into chunks. Next copies the next chunk into buf (cap ≥ maxLen) and
// returns it, or returns io.EOF at the end.
type cutter interface {
	Next(buf []byte) ([]byte, error)
}

func (c Chunking) newCutter(r io.Reader) (cutter, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	switch c.Algorithm {
	case ChunkingFixed:
		return &fixedCutter{r: r, size: c.Size}, nil
	case ChunkingRabin:
		pol := chunker.Pol(c.Polynomial)
		if !irreducible(pol) {
			return nil, fmt.Errorf("rabin polynomial %#x is not irreducible", c.Polynomial)
		}
		ch := chunker.NewWithBoundaries(r, pol, uint(c.Min), uint(c.Max))
		ch.SetAverageBits(c.AverageBits)
		return &rabinCutter{c: ch}, nil
	}
	return nil, fmt.Errorf("unknown chunking %q", c.Algorithm)
}

// irreducibleSeen holds the polynomials found irreducible so far. The test costs most of a
// millisecond, about as much as cutting 256 KiB, and an install cuts the active slot in many
// short windows, each with its own cutter.
var irreducibleSeen sync.Map // chunker.Pol → struct{}

func irreducible(pol chunker.Pol) bool {
	if _, ok := irreducibleSeen.Load(pol); ok {
		return true
	}
	if !pol.Irreducible() {
		return false
	}
	irreducibleSeen.Store(pol, struct{}{})
	return true
}

type fixedCutter struct {
	r    io.Reader
	size int
}

func (f *fixedCutter) Next(buf []byte) ([]byte, error) {
	n, err := io.ReadFull(f.r, buf[:f.size])
	switch {
	case n > 0 && (err == nil || err == io.ErrUnexpectedEOF):
		return buf[:n], nil
	case err == nil || err == io.ErrUnexpectedEOF:
		return nil, io.EOF
	}
	return nil, err
}

type rabinCutter struct {
	c *chunker.Chunker
}

func (r *rabinCutter) Next(buf []byte) ([]byte, error) {
	ch, err := r.c.Next(buf[:0])
	if err != nil {
		return nil, err
	}
	return ch.Data, nil
}
