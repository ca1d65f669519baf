package payload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// byteSource is where payload bytes come from: a local file or an HTTP(S) URL.
type byteSource interface {
	// prepare learns the size (one request for a URL).
	prepare(ctx context.Context) error
	Size() int64
	// ReadAt reads exactly len(p) bytes at off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// OpenRange streams n bytes at off.
	OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
	String() string
}

// Source is where Install reads a payload from. Build it with FromFile or FromURL.
type Source struct {
	src byteSource
}

// FromFile reads the payload from r (size bytes).
func FromFile(r io.ReaderAt, size int64) Source {
	return Source{src: &readerAtSource{r: r, size: size}}
}

// FromURL reads the payload from an HTTP(S) URL with Range requests. client nil means a client
// with sane timeouts.
func FromURL(url string, client *http.Client) Source {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       60 * time.Second,
			MaxIdleConnsPerHost:   8,
		}}
	}
	return Source{src: &httpSource{url: url, client: client, size: -1}}
}

type readerAtSource struct {
	r    io.ReaderAt
	size int64
}

func (s *readerAtSource) prepare(context.Context) error { return nil }
func (s *readerAtSource) Size() int64                   { return s.size }
func (s *readerAtSource) String() string                { return "file" }

func (s *readerAtSource) readFull(p []byte, off int64) error {
	if off < 0 || off > s.size || int64(len(p)) > s.size-off {
		return reject(ReasonTruncated, "read [%d,+%d) past the %d-byte file", off, len(p), s.size)
	}
	n, err := s.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return reject(ReasonTruncated, "file ends at %d, before %d", off+int64(n), off+int64(len(p)))
	}
	return err
}

func (s *readerAtSource) ReadAt(_ context.Context, p []byte, off int64) error {
	return s.readFull(p, off)
}

func (s *readerAtSource) OpenRange(_ context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || off > s.size || n > s.size-off {
		return nil, reject(ReasonTruncated, "range [%d,+%d) past the %d-byte file", off, n, s.size)
	}
	return io.NopCloser(io.NewSectionReader(s.r, off, n)), nil
}

// transientError marks a failure worth retrying (network error, 5xx, cut body).
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }
func (e *transientError) Unwrap() error { return e.err }

func isTransient(err error) bool {
	var t *transientError
	return errors.As(err, &t)
}

type httpSource struct {
	url    string
	client *http.Client
	size   int64
	retry  retrier
}

func (s *httpSource) String() string { return s.url }
func (s *httpSource) Size() int64    { return s.size }

// prepare fetches the first byte to learn the size from Content-Range.
func (s *httpSource) prepare(ctx context.Context) error {
	return s.retry.do(ctx, func() error {
		body, total, err := s.get(ctx, 0, 1)
		if err != nil {
			return err
		}
		body.Close()
		s.size = total
		return nil
	})
}

func (s *httpSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	return s.retry.do(ctx, func() error {
		body, _, err := s.get(ctx, off, int64(len(p)))
		if err != nil {
			return err
		}
		defer body.Close()
		if _, err := io.ReadFull(body, p); err != nil {
			return &transientError{fmt.Errorf("read %s [%d,+%d): %w", s.url, off, len(p), err)}
		}
		return nil
	})
}

func (s *httpSource) OpenRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	var body io.ReadCloser
	err := s.retry.do(ctx, func() error {
		b, _, err := s.get(ctx, off, n)
		body = b
		return err
	})
	return body, err
}

// get issues one Range request for [off, off+n) and checks the answer: 206 with exactly that
// Content-Range (and the known total size). A 200 means the server ignored Range.
func (s *httpSource) get(ctx context.Context, off, n int64) (io.ReadCloser, int64, error) {
	if n <= 0 {
		return nil, 0, fmt.Errorf("http range of %d bytes", n)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("payload url: %w", err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	// Identity encoding: a transparently gunzipped body would not match the byte range.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, &transientError{fmt.Errorf("GET %s: %w", s.url, err)}
	}
	fail := func(e error) (io.ReadCloser, int64, error) {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, 0, e
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return fail(reject(ReasonRangeIgnored, "%s answered a Range request with the whole file (200); the server must support HTTP Range", s.url))
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return fail(&transientError{fmt.Errorf("GET %s: %s", s.url, resp.Status)})
	default:
		return fail(fmt.Errorf("GET %s: %s", s.url, resp.Status))
	}
	start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return fail(rejectErr(ReasonContentRange, err, "%s", s.url))
	}
	if start != off || end != off+n-1 || (s.size >= 0 && total != s.size) {
		return fail(reject(ReasonContentRange, "%s answered bytes %d-%d/%d for a request of %d-%d/%d",
			s.url, start, end, total, off, off+n-1, s.size))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return fail(reject(ReasonContentRange, "%s sent Content-Length %d for a %d-byte range", s.url, resp.ContentLength, n))
	}
	return resp.Body, total, nil
}

// parseContentRange parses "bytes START-END/TOTAL".
func parseContentRange(v string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q is not 'bytes START-END/TOTAL'", v)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	s, e, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, fmt.Errorf("Content-Range %q is not 'bytes START-END/TOTAL'", v)
	}
	nums := [3]int64{}
	for i, f := range []string{s, e, tot} {
		n, perr := strconv.ParseInt(f, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, 0, fmt.Errorf("Content-Range %q has a bad number %q", v, f)
		}
		nums[i] = n
	}
	if nums[0] > nums[1] || nums[1] >= nums[2] {
		return 0, 0, 0, fmt.Errorf("Content-Range %q is inconsistent", v)
	}
	return nums[0], nums[1], nums[2], nil
}

// Retry is the retry policy for transient download failures: up to Attempts tries per request,
// waiting Backoff(attempt) between them.
type Retry struct {
	Attempts int                             // tries per request without progress; default 6
	Backoff  func(attempt int) time.Duration // default: JitteredBackoff
}

// JitteredBackoff waits a random time in [d/2, d) with d = 250ms·2^attempt, capped at 15s.
func JitteredBackoff(attempt int) time.Duration {
	d := 250 * time.Millisecond << min(attempt, 6)
	d = min(d, 15*time.Second)
	return d/2 + rand.N(d/2)
}

type retrier struct{ Retry }

func (r retrier) attempts() int {
	if r.Attempts <= 0 {
		return 6
	}
	return r.Attempts
}

func (r retrier) wait(ctx context.Context, attempt int) error {
	b := r.Backoff
	if b == nil {
		b = JitteredBackoff
	}
	t := time.NewTimer(b(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// do runs f until it succeeds, fails with a non-transient error, or attempts run out.
func (r retrier) do(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < r.attempts(); attempt++ {
		if attempt > 0 {
			if werr := r.wait(ctx, attempt-1); werr != nil {
				return werr
			}
		}
		if err = f(); err == nil || !isTransient(err) {
			return err
		}
	}
	return fmt.Errorf("giving up after %d attempts: %w", r.attempts(), err)
}
