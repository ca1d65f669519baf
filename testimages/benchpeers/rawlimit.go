package benchpeers

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// rawBlock is the block size of the raw-limit measure (about twinslot's average chunk).
const rawBlock = 64 << 10

// rawSample caps how much of the image the raw-limit measure holds in memory.
const rawSample = 512 << 20

// rawLimit holds an image compressed in rawBlock blocks.
type rawLimit struct {
	frames  [][]byte
	decoded int64
}

func newRawLimit(path string) (*rawLimit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	r := &rawLimit{}
	buf := make([]byte, rawBlock)
	for r.decoded < rawSample {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			r.frames = append(r.frames, enc.EncodeAll(buf[:n], nil))
			r.decoded += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// rawMinTime is how long one raw-limit measure runs at least (whole passes over the image).
const rawMinTime = time.Second

// measure decodes and hashes every block on all cores, in passes until rawMinTime has gone,
// and returns decoded bytes per second.
func (r *rawLimit) measure() (float64, error) {
	start := time.Now()
	var bytes int64
	for time.Since(start) < rawMinTime {
		if err := r.pass(); err != nil {
			return 0, err
		}
		bytes += r.decoded
	}
	return float64(bytes) / time.Since(start).Seconds(), nil
}

// pass decodes and hashes every block once, on all cores.
func (r *rawLimit) pass() error {
	workers := runtime.GOMAXPROCS(0)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
			if err != nil {
				failed.Store(true)
				return
			}
			defer dec.Close()
			out := make([]byte, 0, rawBlock)
			var sink byte
			defer func() { sinkHole.Add(int64(sink)) }()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(r.frames)) {
					return
				}
				d, err := dec.DecodeAll(r.frames[i], out[:0])
				if err != nil {
					failed.Store(true)
					return
				}
				sum := sha256.Sum256(d)
				sink ^= sum[0]
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		return fmt.Errorf("raw limit: zstd decode failed")
	}
	return nil
}

// sinkHole keeps the hashes from being optimised away.
var sinkHole atomic.Int64

func cores() int { return runtime.GOMAXPROCS(0) }
