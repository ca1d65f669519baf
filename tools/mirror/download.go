package mirror

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/cavaliergopher/grab/v3"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// File is one file of an offer.
type File struct {
	Name   string
	URLs   []string // full download URLs, in order of preference
	Size   int64
	SHA256 [sha256.Size]byte
	SHA1   [sha1.Size]byte // all zeros: the upstream gave none
}

// Offer is a version the upstream offered for a pair: the main payload first, then any extra
// files (Flatcar's OEM and sysext images).
type Offer struct {
	Pair    Pair
	Version string
	Files   []File
}

func (o *Offer) total() int64 {
	var n int64
	for _, f := range o.Files {
		n += f.Size
	}
	return n
}

// progressEvery is how often download progress is reported.
const progressEvery = 250 * time.Millisecond

// fetchResult is the outcome of one download attempt of an offer.
type fetchResult struct {
	resumed, fetched int64
	retry            bool    // at least one file failed transiently: another attempt may finish it
	errs             []error // per failed file
}

// fetch downloads every file of o into its partial path, several at once, resuming what a
// previous attempt left. It returns per-file errors; a file that arrived whole is verified by
// the caller.
func (m *Mirror) fetch(parent context.Context, o *Offer, attempt int, progress func(done, resumed int64)) fetchResult {
	var res fetchResult
	// The attempt is cancelled when no byte arrived for m.stall: a connection that hangs is
	// dropped and resumed by the next attempt.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stalled := false
	before := make([]int64, len(o.Files))
	var reqs []*grab.Request
	for i, f := range o.Files {
		path := m.partialPath(f)
		if st, err := os.Stat(path); err == nil {
			if st.Size() > f.Size { // longer than offered: not a prefix of this file
				os.Remove(path)
			} else {
				before[i] = st.Size()
			}
		}
		res.resumed += before[i]
		req, err := grab.NewRequest(path, f.URLs[attempt%len(f.URLs)])
		if err != nil {
			res.errs = append(res.errs, fmt.Errorf("%s: %w", f.Name, err))
			continue
		}
		req = req.WithContext(ctx)
		req.Size = f.Size
		req.IgnoreRemoteTime = true
		req.Tag = i
		reqs = append(reqs, req)
	}
	if len(res.errs) > 0 {
		return res
	}
	done := func() int64 {
		var n int64
		for _, f := range o.Files {
			if st, err := os.Stat(m.partialPath(f)); err == nil {
				n += st.Size()
			}
		}
		return n
	}
	gc := &grab.Client{HTTPClient: m.http, UserAgent: m.userAgent}
	respch := gc.DoBatch(m.workers, reqs...)
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var resps []*grab.Response
	last, lastAt := res.resumed, m.now()
	for open := true; open; {
		select {
		case r, ok := <-respch:
			if !ok {
				open = false
				break
			}
			resps = append(resps, r)
		case <-tick.C:
			n, now := done(), m.now()
			progress(n, res.resumed)
			if n != last {
				last, lastAt = n, now
			} else if now.Sub(lastAt) >= m.stall && !stalled {
				stalled = true
				cancel()
			}
		}
	}
	progress(done(), res.resumed)
	for _, r := range resps {
		i := r.Request.Tag.(int)
		f := o.Files[i]
		after := before[i]
		if st, err := os.Stat(m.partialPath(f)); err == nil {
			after = st.Size()
		}
		res.fetched += max(after-before[i], 0)
		err := r.Err()
		if err == nil {
			continue
		}
		transient := true
		var sc grab.StatusCodeError
		switch {
		case parent.Err() != nil:
			transient = false
		case stalled && errors.Is(err, context.Canceled):
			err = fmt.Errorf("no data arrived for %s: dropped the connection", m.stall)
		case errors.As(err, &sc):
			transient = int(sc) >= 500 || int(sc) == http.StatusRequestTimeout || int(sc) == http.StatusTooManyRequests
			err = fmt.Errorf("the upstream answered %d %s for %s", int(sc), http.StatusText(int(sc)), r.Request.URL())
		case errors.Is(err, grab.ErrBadLength):
			os.Remove(m.partialPath(f))
			if before[i] == 0 {
				err = &IntegrityError{File: f.Name, What: "size", Expected: fmt.Sprint(f.Size), Got: fmt.Sprint(r.Size())}
				transient = false
			} else {
				err = fmt.Errorf("the server did not resume at byte %d (it announced %d bytes in all): starting the file over", before[i], r.Size())
			}
		}
		if transient {
			res.retry = true
		}
		res.errs = append(res.errs, fmt.Errorf("%s: %w", f.Name, err))
	}
	return res
}

// verify checks a whole downloaded file against the offer, in one pass for both hashes, and
// deletes it when it does not match (so the next attempt fetches it anew).
func (m *Mirror) verify(f File) error {
	path := m.partialPath(f)
	err := verifyFile(path, f)
	var ie *IntegrityError
	if errors.As(err, &ie) {
		os.Remove(path)
	}
	return err
}

func verifyFile(path string, f File) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	defer fh.Close()
	d, err := omaha.DigestOf(fh)
	if err != nil {
		return fmt.Errorf("%s: read the download: %w", f.Name, err)
	}
	if d.Size != f.Size {
		return &IntegrityError{File: f.Name, What: "size", Expected: fmt.Sprint(f.Size), Got: fmt.Sprint(d.Size)}
	}
	if d.SHA256 != f.SHA256 {
		return &IntegrityError{File: f.Name, What: "sha256", Expected: hex.EncodeToString(f.SHA256[:]), Got: hex.EncodeToString(d.SHA256[:])}
	}
	if f.SHA1 != [sha1.Size]byte{} && d.SHA1 != f.SHA1 {
		b64 := base64.StdEncoding.EncodeToString
		return &IntegrityError{File: f.Name, What: "sha1", Expected: b64(f.SHA1[:]), Got: b64(d.SHA1[:])}
	}
	return nil
}

func (m *Mirror) partialPath(f File) string {
	return filepath.Join(m.dir, "partial", hex.EncodeToString(f.SHA256[:]))
}

// store moves a verified file to its place under packages/ (rename, then fsync the directory).
func (m *Mirror) store(o *Offer, f File) (string, error) {
	dir := filepath.Join(m.dir, "packages", o.Pair.App, o.Pair.Board, o.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src := m.partialPath(f)
	if err := syncFile(src); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, f.Name)
	if err := os.Rename(src, dst); err != nil {
		return "", err
	}
	return dst, atomicfile.SyncDir(dir)
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
