package payload_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// memSlot is a slot in memory that counts writes.
type memSlot struct {
	mu     sync.Mutex
	b      []byte
	writes int
}

func newMemSlot(n int) *memSlot { return &memSlot{b: make([]byte, n)} }

func (s *memSlot) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off >= int64(len(s.b)) {
		return 0, io.EOF
	}
	n := copy(p, s.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *memSlot) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off+int64(len(p)) > int64(len(s.b)) {
		return 0, errors.New("write past the end of the slot")
	}
	s.writes++
	return copy(s.b[off:], p), nil
}

func (s *memSlot) sum() [32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sha256.Sum256(s.b)
}

var noWait = payload.Retry{Backoff: func(int) time.Duration { return 0 }}

type installFixture struct {
	key   *payloadtest.Key
	trust *payload.TrustRoot
	old   []byte // the active slot's image
	new   []byte // the image in the payload
	path  string
	file  []byte
	m     *payload.Manifest
}

func newInstallFixture(t *testing.T, size int, change float64) *installFixture {
	t.Helper()
	f := &installFixture{key: payloadtest.NewKey(t, "")}
	f.trust = payloadtest.TrustRoot(t, 1, 0, f.key)
	f.old = payloadtest.Image(size, 7)
	f.new = payloadtest.Mutate(f.old, change, 8)
	// Shift the second half by 3 blocks, as a rebuilt filesystem would.
	half := len(f.new) / 2
	shifted := append(append(bytes.Clone(f.new[:half]), make([]byte, 3*4096)...), f.new[half:len(f.new)-3*4096]...)
	f.new = shifted
	f.path = filepath.Join(t.TempDir(), "p.tsp")
	f.m = payloadtest.BuildBytes(t, f.new, f.path, payloadtest.Options("2.0.0"), f.key)
	var err error
	if f.file, err = os.ReadFile(f.path); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *installFixture) src() payload.Source {
	return payload.FromFile(bytes.NewReader(f.file), int64(len(f.file)))
}

func (f *installFixture) opts() payload.InstallOptions {
	return payload.InstallOptions{Trust: f.trust, Expect: payload.Expect{Board: "amd64-usr"}, Retry: noWait}
}

func TestInstallFullAndDelta(t *testing.T) {
	f := newInstallFixture(t, 4<<20, 0.05)
	slotSize := len(f.new) + 1<<20

	t.Run("full", func(t *testing.T) {
		slot := newMemSlot(slotSize)
		var last payload.Progress
		o := f.opts()
		o.Progress = func(p payload.Progress) { last = p }
		res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(slotSize)}, o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(slot.b[:len(f.new)], f.new) {
			t.Fatal("slot differs from the image")
		}
		if res.BytesReusedActive != 0 || res.BytesFetched != f.m.DataSize {
			t.Fatalf("full install result %+v (data %d)", res, f.m.DataSize)
		}
		if last.Phase != "done" || last.Done != int64(len(f.new)) || last.Total != int64(len(f.new)) {
			t.Fatalf("last progress %+v", last)
		}
	})
	t.Run("delta from the active slot", func(t *testing.T) {
		slot := newMemSlot(slotSize)
		active := bytes.NewReader(append(bytes.Clone(f.old), make([]byte, 1<<20)...))
		res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(slotSize), Active: active, ActiveSize: active.Size()}, f.opts())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(slot.b[:len(f.new)], f.new) {
			t.Fatal("slot differs from the image")
		}
		if res.BytesReusedActive < int64(len(f.new))/2 || res.BytesFetched > f.m.DataSize/2 {
			t.Fatalf("delta reused %d, fetched %d of %d", res.BytesReusedActive, res.BytesFetched, f.m.DataSize)
		}
	})
	t.Run("repeat is a no-op", func(t *testing.T) {
		slot := newMemSlot(slotSize)
		copy(slot.b, f.new)
		o := f.opts()
		hooked := 0
		o.BeforeWrite = func() error { hooked++; return nil }
		res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(slotSize)}, o)
		if err != nil {
			t.Fatal(err)
		}
		if res.BytesFetched != 0 || res.BytesWritten != 0 || slot.writes != 0 || res.BytesReusedTarget != int64(len(f.new))-res.BytesZero || hooked != 0 {
			t.Fatalf("repeat did work: %+v, %d writes, hook ran %d times", res, slot.writes, hooked)
		}
	})
	t.Run("BeforeWrite runs once and can refuse", func(t *testing.T) {
		slot := newMemSlot(slotSize)
		o := f.opts()
		hooked := 0
		o.BeforeWrite = func() error { hooked++; return errors.New("slot is busy") }
		_, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(slotSize)}, o)
		if err == nil || !strings.Contains(err.Error(), "slot is busy") || hooked != 1 || slot.writes != 0 {
			t.Fatalf("err %v, hook ran %d times, %d writes", err, hooked, slot.writes)
		}
	})
}

// cutReader fails every read that touches [from, to), like a download cut or an unplugged disk.
type cutReader struct {
	r        io.ReaderAt
	from, to int64
}

func (c *cutReader) ReadAt(p []byte, off int64) (int, error) {
	if off < c.to && off+int64(len(p)) > c.from {
		return 0, errors.New("cable unplugged")
	}
	return c.r.ReadAt(p, off)
}

func TestInstallResumesFromTarget(t *testing.T) {
	f := newInstallFixture(t, 4<<20, 0.05)
	slot := newMemSlot(len(f.new))
	dataStart := int64(len(f.file)) - f.m.TableSize - f.m.DataSize
	cut := payload.FromFile(&cutReader{r: bytes.NewReader(f.file), from: dataStart + f.m.DataSize/2, to: dataStart + f.m.DataSize}, int64(len(f.file)))
	o := f.opts()
	o.MaxRequest = 64 << 10 // many small requests, so part of the image lands before the cut
	o.Parallel = 1
	if _, err := payload.Install(t.Context(), cut, payload.Target{Slot: slot, Size: int64(len(slot.b))}, o); err == nil {
		t.Fatal("install through a cut source succeeded")
	}
	res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(slot.b, f.new) {
		t.Fatal("slot differs from the image")
	}
	if res.BytesReusedTarget == 0 || res.BytesFetched >= f.m.DataSize {
		t.Fatalf("resume redid everything: %+v", res)
	}
}

// TestInstallRejectsBeforeWriting proves the target stays byte-identical on every rejection that
// happens before data.
func TestInstallRejectsBeforeWriting(t *testing.T) {
	f := newInstallFixture(t, 1<<20, 0.05)
	stranger := payloadtest.NewKey(t, "")
	unsigned := filepath.Join(t.TempDir(), "u.tsp")
	payloadtest.BuildBytes(t, f.new, unsigned, payloadtest.Options("2.0.0"))
	ub, _ := os.ReadFile(unsigned)
	fileSrc := func(b []byte) payload.Source { return payload.FromFile(bytes.NewReader(b), int64(len(b))) }
	tests := []struct {
		name string
		src  payload.Source
		opts func(o *payload.InstallOptions)
		size int64
		want *payload.RejectError
	}{
		{"unsigned", fileSrc(ub), nil, 0, payload.ErrNoSignature},
		{"unknown key", f.src(), func(o *payload.InstallOptions) { o.Trust = payloadtest.TrustRoot(t, 1, 0, stranger) }, 0, payload.ErrUnknownKey},
		{"wrong board", f.src(), func(o *payload.InstallOptions) { o.Expect.Board = "arm64-usr" }, 0, payload.ErrWrongBoard},
		{"below floor", f.src(), func(o *payload.InstallOptions) { o.Expect.Floor = 2 }, 0, payload.ErrSecurityVersion},
		{"truncated", fileSrc(f.file[:len(f.file)-10]), nil, 0, payload.ErrTruncated},
		{"image larger than slot", f.src(), nil, int64(len(f.new)) - 1, payload.ErrImageTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			slot := newMemSlot(len(f.new) + 4096)
			copy(slot.b, f.old)
			before := slot.sum()
			o := f.opts()
			if tc.opts != nil {
				tc.opts(&o)
			}
			size := tc.size
			if size == 0 {
				size = int64(len(slot.b))
			}
			_, err := payload.Install(t.Context(), tc.src, payload.Target{Slot: slot, Size: size}, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want.Reason)
			}
			if slot.writes != 0 || slot.sum() != before {
				t.Fatalf("target changed on rejection (%d writes)", slot.writes)
			}
		})
	}
}

func TestInstallChunkHashMismatch(t *testing.T) {
	f := newInstallFixture(t, 1<<20, 0.05)
	bad := bytes.Clone(f.file)
	dataStart := len(bad) - int(f.m.TableSize) - int(f.m.DataSize)
	for _, c := range f.m.Chunks {
		if c.Encoding == payload.EncodingRaw {
			bad[dataStart+int(c.DataOffset)+int(c.DataLength)/2] ^= 0xff
			break
		}
	}
	slot := newMemSlot(len(f.new))
	_, err := payload.Install(t.Context(), payload.FromFile(bytes.NewReader(bad), int64(len(bad))), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts())
	if !errors.Is(err, payload.ErrChunkHash) {
		t.Fatalf("got %v, want chunk-hash", err)
	}
}

// TestInstallReadBack proves the final read-back catches a slot that does not hold what was
// written, with the chunk checks alone and with the whole-image SHA-256 (RehashImage).
func TestInstallReadBack(t *testing.T) {
	f := newInstallFixture(t, 1<<20, 0.05)
	for _, rehashImage := range []bool{false, true} {
		o := f.opts()
		o.RehashImage = rehashImage
		t.Run(fmt.Sprintf("RehashImage=%v/flipped byte", rehashImage), func(t *testing.T) {
			slot := &flakySlot{memSlot: newMemSlot(len(f.new)), flipAt: int64(len(f.new) / 3)}
			_, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(f.new))}, o)
			if !errors.Is(err, payload.ErrImageHash) {
				t.Fatalf("got %v, want image-hash", err)
			}
		})
		t.Run(fmt.Sprintf("RehashImage=%v/good slot", rehashImage), func(t *testing.T) {
			slot := newMemSlot(len(f.new))
			if _, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(f.new))}, o); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(slot.b, f.new) {
				t.Fatal("slot differs from the image")
			}
		})
	}
}

// TestInstallZeroChunks covers the zero chunks, which the final read-back settles: kept where the
// target already holds zeros, written where it does not, and refused when the zeros do not stick.
func TestInstallZeroChunks(t *testing.T) {
	f := newInstallFixture(t, 2<<20, 0.05)
	var zeroBytes int64
	for _, c := range f.m.Chunks {
		if c.Encoding == payload.EncodingZero {
			zeroBytes += int64(c.Length)
		}
	}
	if zeroBytes == 0 {
		t.Fatal("fixture image has no zero chunks")
	}
	dirty := func() *memSlot {
		s := newMemSlot(len(f.new))
		for i := range s.b {
			s.b[i] = 0xa5
		}
		return s
	}
	t.Run("zeros that do not stick", func(t *testing.T) {
		slot := &dropZerosSlot{memSlot: dirty()}
		_, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(f.new))}, f.opts())
		if !errors.Is(err, payload.ErrImageHash) {
			t.Fatalf("got %v, want image-hash", err)
		}
	})
	for _, tc := range []struct {
		name    string
		slot    *memSlot
		written bool
	}{
		{"dirty target: zero chunks written", dirty(), true},
		{"zeroed target: zero chunks kept", newMemSlot(len(f.new)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: tc.slot, Size: int64(len(f.new))}, f.opts())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tc.slot.b, f.new) {
				t.Fatal("slot differs from the image")
			}
			// Zero chunks count as zero whether kept or written, never as reused.
			wantWritten := int64(len(f.new)) - zeroBytes
			if tc.written {
				wantWritten = int64(len(f.new))
			}
			if res.BytesZero != zeroBytes || res.BytesReusedTarget != 0 || res.BytesWritten != wantWritten {
				t.Fatalf("zero %d, reused %d, written %d; want %d, 0, %d", res.BytesZero, res.BytesReusedTarget, res.BytesWritten, zeroBytes, wantWritten)
			}
		})
	}
}

// writebackSlot records the ranges Install writes and asks it to start writing back.
type writebackSlot struct {
	*memSlot
	wbMu           sync.Mutex
	ranges, writes [][2]int64
}

func (s *writebackSlot) WriteAt(p []byte, off int64) (int, error) {
	s.wbMu.Lock()
	s.writes = append(s.writes, [2]int64{off, int64(len(p))})
	s.wbMu.Unlock()
	return s.memSlot.WriteAt(p, off)
}

func (s *writebackSlot) StartWriteback(off, n int64) {
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	s.ranges = append(s.ranges, [2]int64{off, n})
}

// coalesce joins adjacent ranges of rs (sorted by offset).
func coalesce(rs [][2]int64) [][2]int64 {
	var out [][2]int64
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1][0]+out[n-1][1] == r[0] {
			out[n-1][1] += r[1]
			continue
		}
		out = append(out, r)
	}
	return out
}

// TestInstallStartsWriteback proves every written byte is handed to StartWriteback once (the
// fetch hands neighbouring writes on together), and nothing else is: on a fresh slot that covers
// the image exactly, and on a repeated install (everything already in place) nothing is
// written or handed on.
func TestInstallStartsWriteback(t *testing.T) {
	f := newInstallFixture(t, 2<<20, 0.05)
	slot := &writebackSlot{memSlot: newMemSlot(len(f.new) + 4096)}
	res, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts())
	if err != nil {
		t.Fatal(err)
	}
	byOffset := func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) }
	slices.SortFunc(slot.ranges, byOffset)
	slices.SortFunc(slot.writes, byOffset)
	if !slices.Equal(coalesce(slot.ranges), coalesce(slot.writes)) || len(slot.ranges) > len(slot.writes) {
		t.Fatalf("writeback ranges %v do not cover the writes %v", slot.ranges, slot.writes)
	}
	var end, sum int64
	for _, r := range slot.ranges {
		if r[0] < end || r[1] <= 0 || r[0]+r[1] > int64(len(f.new)) {
			t.Fatalf("writeback ranges %v: overlap or outside the image at %d", slot.ranges, r[0])
		}
		end, sum = r[0]+r[1], sum+r[1]
	}
	if sum != res.BytesWritten || sum == 0 {
		t.Fatalf("handed on %d bytes, written %d", sum, res.BytesWritten)
	}
	slot.ranges, slot.writes = nil, nil
	if _, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts()); err != nil {
		t.Fatal(err)
	}
	if len(slot.ranges) != 0 || len(slot.writes) != 0 {
		t.Fatalf("a repeated install wrote %v and handed on %v", slot.writes, slot.ranges)
	}
}

// dropZerosSlot silently drops writes of all-zero buffers, as a failing device might.
type dropZerosSlot struct{ *memSlot }

func (s *dropZerosSlot) WriteAt(p []byte, off int64) (int, error) {
	if bytes.Count(p, []byte{0}) == len(p) {
		return len(p), nil
	}
	return s.memSlot.WriteAt(p, off)
}

// flakySlot corrupts one byte on its way to "disk", as a failing device would.
type flakySlot struct {
	*memSlot
	flipAt int64
}

func (s *flakySlot) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.memSlot.WriteAt(p, off)
	if off <= s.flipAt && s.flipAt < off+int64(len(p)) {
		s.memSlot.mu.Lock()
		s.memSlot.b[s.flipAt] ^= 1
		s.memSlot.mu.Unlock()
	}
	return n, err
}

// servePayload serves b over loopback HTTP with Range support, passing each request to mw first.
func servePayload(t *testing.T, b []byte, mw func(w http.ResponseWriter, r *http.Request) bool) (*httptest.Server, *atomic.Int64) {
	var count atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		if mw != nil && mw(w, r) {
			return
		}
		http.ServeContent(w, r, "p.tsp", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(srv.Close)
	return srv, &count
}

func TestInstallHTTP(t *testing.T) {
	f := newInstallFixture(t, 4<<20, 0.05)
	active := bytes.NewReader(f.old)

	t.Run("delta over http", func(t *testing.T) {
		srv, count := servePayload(t, f.file, nil)
		slot := newMemSlot(len(f.new))
		res, err := payload.Install(t.Context(), payload.FromURL(srv.URL+"/p.tsp", srv.Client()),
			payload.Target{Slot: slot, Size: int64(len(slot.b)), Active: active, ActiveSize: active.Size()}, f.opts())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(slot.b, f.new) {
			t.Fatal("slot differs from the image")
		}
		// Requests counts every request, the size probe, header, envelope and table included.
		if res.BytesFetched > f.m.DataSize/2 || int64(res.Requests) != count.Load() {
			t.Fatalf("fetched %d of %d in %d requests (%d served)", res.BytesFetched, f.m.DataSize, res.Requests, count.Load())
		}
	})
	t.Run("retries 503 and resumes after cuts", func(t *testing.T) {
		var n atomic.Int64
		srv, _ := servePayload(t, f.file, func(w http.ResponseWriter, r *http.Request) bool {
			switch k := n.Add(1); {
			case k == 2:
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return true
			case k%3 == 0 && strings.HasPrefix(r.Header.Get("Range"), "bytes="):
				cutResponse(t, w, r, f.file)
				return true
			}
			return false
		})
		slot := newMemSlot(len(f.new))
		o := f.opts()
		o.MaxRequest = 256 << 10
		res, err := payload.Install(t.Context(), payload.FromURL(srv.URL, srv.Client()), payload.Target{Slot: slot, Size: int64(len(slot.b))}, o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(slot.b, f.new) {
			t.Fatal("slot differs from the image")
		}
		if res.BytesFetched < f.m.DataSize {
			t.Fatalf("fetched %d < data %d: cuts not counted?", res.BytesFetched, f.m.DataSize)
		}
	})
	bad := []struct {
		name string
		mw   func(w http.ResponseWriter, r *http.Request) bool
		want *payload.RejectError
	}{
		{"server ignores Range", func(w http.ResponseWriter, r *http.Request) bool {
			r.Header.Del("Range")
			return false
		}, payload.ErrRangeIgnored},
		{"wrong Content-Range", func(w http.ResponseWriter, r *http.Request) bool {
			var a, b int64
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
			a++
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(f.file)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(f.file[a : b+1])
			return true
		}, payload.ErrContentRange},
		{"total size changes between requests", func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Range") == "bytes=0-0" {
				return false
			}
			var a, b int64
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(f.file)+1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(f.file[a : b+1])
			return true
		}, payload.ErrContentRange},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := servePayload(t, f.file, tc.mw)
			slot := newMemSlot(len(f.new))
			copy(slot.b, f.old)
			before := slot.sum()
			_, err := payload.Install(t.Context(), payload.FromURL(srv.URL, srv.Client()), payload.Target{Slot: slot, Size: int64(len(slot.b))}, f.opts())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %s", err, tc.want.Reason)
			}
			if slot.writes != 0 || slot.sum() != before {
				t.Fatal("target changed")
			}
		})
	}
	t.Run("404 is not retried forever", func(t *testing.T) {
		srv, count := servePayload(t, f.file, func(w http.ResponseWriter, r *http.Request) bool {
			http.NotFound(w, r)
			return true
		})
		_, err := payload.Install(t.Context(), payload.FromURL(srv.URL, srv.Client()), payload.Target{Slot: newMemSlot(10), Size: 10}, f.opts())
		if err == nil || !strings.Contains(err.Error(), "404") || count.Load() != 1 {
			t.Fatalf("err %v after %d requests", err, count.Load())
		}
	})
}

// cutResponse answers a Range request with the right headers but only half the body, then drops
// the connection.
func cutResponse(t *testing.T, w http.ResponseWriter, r *http.Request, file []byte) {
	var a, b int64
	fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
	hj, ok := w.(http.Hijacker)
	if !ok {
		t.Error("no hijacker")
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	n := b - a + 1
	fmt.Fprintf(buf, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n", a, b, len(file), n)
	buf.Write(file[a : a+n/2])
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

func TestJitteredBackoff(t *testing.T) {
	for attempt, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second} {
		for range 50 {
			if d := payload.JitteredBackoff(attempt); d < want/2 || d >= want {
				t.Fatalf("attempt %d: %v outside [%v, %v)", attempt, d, want/2, want)
			}
		}
	}
	if d := payload.JitteredBackoff(40); d >= 15*time.Second || d < 7500*time.Millisecond {
		t.Fatalf("cap: %v", d)
	}
}

// TestInstallProgress drives the clock by hand: every reading advances it 10ms, so rate and ETA
// follow from the bytes done.
func TestInstallProgress(t *testing.T) {
	f := newInstallFixture(t, 2<<20, 0.05)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(10 * time.Millisecond)
		return now
	}
	var seen []payload.Progress
	o := f.opts()
	o.Now = clock
	o.ProgressInterval = time.Nanosecond
	o.Progress = func(p payload.Progress) { seen = append(seen, p) }
	slot := newMemSlot(len(f.new))
	if _, err := payload.Install(t.Context(), f.src(), payload.Target{Slot: slot, Size: int64(len(slot.b))}, o); err != nil {
		t.Fatal(err)
	}
	phases := map[string]bool{}
	var midway bool
	for i, p := range seen {
		phases[p.Phase] = true
		if i > 0 && p.Done < seen[i-1].Done {
			t.Fatalf("progress went backwards: %+v after %+v", p, seen[i-1])
		}
		if p.Done > 0 && p.Done < p.Total {
			midway = true
			if p.Rate <= 0 || p.ETA <= 0 {
				t.Fatalf("no rate or ETA midway: %+v", p)
			}
			if want := time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second)); p.ETA != want {
				t.Fatalf("ETA %v, want %v", p.ETA, want)
			}
		}
	}
	for _, ph := range []string{"verify", "scan-target", "fetch", "rehash", "done"} {
		if !phases[ph] {
			t.Errorf("phase %s never reported (saw %v)", ph, phases)
		}
	}
	if !midway || seen[len(seen)-1].Done != int64(len(f.new)) {
		t.Fatalf("progress %v", seen[len(seen)-1])
	}
}
