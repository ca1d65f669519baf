package mirror

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

// noLocal is a Local for tests that stop before publishing.
type noLocal struct{}

func (noLocal) Carries(context.Context, *Offer) (bool, error)   { return false, nil }
func (noLocal) Publish(context.Context, *Offer, []string) error { return errors.New("not here") }

// barrierFiles serves files, each request held until want requests are in flight at once.
func barrierFiles(t *testing.T, files map[string][]byte, want int) *httptest.Server {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path[1:]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodGet {
			mu.Lock()
			arrived++
			if arrived == want {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-time.After(20 * time.Second):
				t.Errorf("%s: the other downloads never started while this one waited: files are not fetched in parallel", r.URL.Path)
				return
			}
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(hs.Close)
	return hs
}

func fileOf(name, base string, b []byte) File {
	return File{Name: name, URLs: []string{base + "/" + name}, Size: int64(len(b)), SHA256: sha256.Sum256(b), SHA1: sha1.Sum(b)}
}

func testMirror(t *testing.T) *Mirror {
	m, err := New(Config{Upstream: "http://127.0.0.1:1/v1/update/", Pairs: []Pair{{App: "a4c4a3c6-6e0b-4b55-9a8e-2b1c2f0e6a10", Channel: "stable", Board: "amd64-usr", Local: "stable"}},
		Dir: t.TempDir(), Local: noLocal{}, Attempts: 2, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestObtainParallel: the files of one offer (a payload and an extra image) download at the
// same time and are stored once verified.
func TestObtainParallel(t *testing.T) {
	main, extra := bytes.Repeat([]byte("payload."), 40000), bytes.Repeat([]byte("oem-img."), 30000)
	hs := barrierFiles(t, map[string][]byte{"update.gz": main, "oem-azure.gz": extra}, 2)
	m := testMirror(t)
	o := &Offer{Pair: m.pairs[0], Version: "4081.2.0", Files: []File{fileOf("update.gz", hs.URL, main), fileOf("oem-azure.gz", hs.URL, extra)}}
	paths, err := m.obtain(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{main, extra} {
		if b, err := os.ReadFile(paths[i]); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %v", paths[i], err)
		}
	}
	// A second obtain finds the stored files and fetches nothing (the server would block).
	hs.Close()
	if again, err := m.obtain(t.Context(), o); err != nil || again[1] != paths[1] {
		t.Fatalf("second obtain: %v %v", again, err)
	}
}

// TestObtainRefuses: each way a file can differ from the offer is an IntegrityError naming
// the file and both values, and nothing is stored.
func TestObtainRefuses(t *testing.T) {
	good := bytes.Repeat([]byte("x"), 5000)
	hs := barrierFiles(t, map[string][]byte{"f": good}, 1)
	for _, tc := range []struct {
		name, what string
		change     func(f *File)
	}{
		{"sha1 of an extra file", "sha1", func(f *File) { f.SHA1[0] ^= 1 }},
		{"sha256", "sha256", func(f *File) { f.SHA256[3] ^= 1 }},
		{"size larger than served", "size", func(f *File) { f.Size++ }},
		{"size smaller than served", "size", func(f *File) { f.Size-- }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMirror(t)
			f := fileOf("f", hs.URL, good)
			tc.change(&f)
			_, err := m.obtain(t.Context(), &Offer{Pair: m.pairs[0], Version: "1.0.0", Files: []File{f}})
			var ie *IntegrityError
			if !errors.As(err, &ie) || ie.What != tc.what || ie.File != "f" || ie.Expected == ie.Got {
				t.Fatalf("want a %s IntegrityError, got %v", tc.what, err)
			}
			if ents, _ := os.ReadDir(m.dir + "/packages"); len(ents) != 0 {
				t.Fatalf("stored %v", ents)
			}
		})
	}
}

// TestObtainNotFound: a file the upstream offers but does not serve fails without retries.
func TestObtainNotFound(t *testing.T) {
	hs := barrierFiles(t, map[string][]byte{}, 1)
	m := testMirror(t)
	_, err := m.obtain(t.Context(), &Offer{Pair: m.pairs[0], Version: "1.0.0", Files: []File{fileOf("gone", hs.URL, []byte("abc"))}})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("404")) || m.Stats().DownloadRetries != 0 {
		t.Fatalf("want a 404 error without retries, got %v (stats %+v)", err, m.Stats())
	}
}

func TestFileKind(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		data string
		want kind
	}{
		"twinslot": {"TWINSLOT\x00\x01rest", kindTwinslot},
		"flatcar":  {"CrAU\x00\x00\x00\x00\x00\x00\x00\x02", kindFlatcar},
		"short":    {"Cr", kindUnknown},
		"other":    {"\x1f\x8b\x08\x00gzip", kindUnknown},
	} {
		p := dir + "/" + name
		os.WriteFile(p, []byte(tc.data), 0o644)
		if k, err := fileKind(p); err != nil || k != tc.want {
			t.Errorf("%s: kind %v, %v; want %v", name, k, err, tc.want)
		}
	}
}
