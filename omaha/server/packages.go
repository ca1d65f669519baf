package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/payload"
)

// DefaultPackageName is the file name hosts download when publish names none.
const DefaultPackageName = "update.tsp"

// maxNameLen bounds a package file name.
const maxNameLen = 128

// checkName accepts a plain file name: [A-Za-z0-9._-], not starting with a dot.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen || name[0] == '.' {
		return badRequest("package name %.40q: want 1..%d characters, not starting with '.'", name, maxNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return badRequest("package name %.40q: only letters, digits, '.', '_' and '-' are allowed", name)
		}
	}
	return nil
}

// verifyPayload is the only way an upload becomes a package: it opens the file as a payload and
// verifies its signatures against the app's trust root and its manifest against the app id.
func verifyPayload(f *os.File, size int64, trust []byte, appID string) (*payload.Manifest, error) {
	tr, err := payload.ParseTrustRoot(trust)
	if err != nil {
		return nil, &apiError{http.StatusConflict, fmt.Sprintf("the app's trust root is unusable (%v): replace it with 'releasectl app set-trust'", err)}
	}
	pf, err := payload.Open(f, size)
	if err != nil {
		return nil, err
	}
	m, err := pf.Verify(tr, payload.Expect{AppID: appID})
	if err != nil {
		return nil, err
	}
	if err := omaha.CheckVersion(m.Version); err != nil {
		return nil, badRequest("payload version: %v", err)
	}
	if err := omaha.CheckText("board", m.Board, omaha.MaxShortLen); err != nil || m.Board == "" {
		return nil, badRequest("payload board %.40q is empty or not printable", m.Board)
	}
	return m, nil
}

// publish receives a payload file (the request body), verifies it, keeps it under the store
// directory by its SHA-256 (temp file, fsync, rename, fsync dir) and records the package.
// Nothing is kept or recorded when any step fails.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	appID, err := appParam(r)
	if err != nil {
		return nil, err
	}
	app, err := s.db.App(ctx, appID)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	channel, extURL := q.Get("channel"), q.Get("url")
	if channel != "" && !store.IsChannel(channel) {
		return nil, badRequest("unknown channel %q (channels: alpha, beta, stable)", channel)
	}
	if channel != "" {
		noteOf(r).setTarget(appID, "channels", channel)
	}
	name := q.Get("name")
	if extURL != "" {
		if err := store.CheckURL(extURL); err != nil {
			return nil, err
		}
		u, _ := url.Parse(extURL)
		if u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/") {
			return nil, badRequest("external URL %q must name the file (no query, no trailing '/')", extURL)
		}
		name = path.Base(u.Path)
	}
	if name == "" {
		name = DefaultPackageName
	}
	if err := checkName(name); err != nil {
		return nil, err
	}

	if len(app.Trust) == 0 {
		return nil, &apiError{http.StatusConflict, fmt.Sprintf("app %s has no twinslot trust root (it serves Flatcar packages only): set one with 'releasectl app set-trust' before publishing twinslot payloads, or publish a Flatcar payload with 'releasectl publish --flatcar'", appID)}
	}
	up, err := s.receive(w, r)
	if err != nil {
		return nil, err
	}
	defer up.discard()
	m, err := verifyPayload(up.f, up.size, app.Trust, appID)
	if err != nil {
		s.log.Warn("refused a payload upload", "app", appID, "err", err)
		return nil, err
	}
	p := store.Package{AppID: appID, Version: m.Version, Board: m.Board, SecurityVersion: m.SecurityVersion, FileName: name,
		Size: up.size, SHA256: up.sha256, SHA1: up.sha1, Format: store.FormatTwinslot}
	var created string
	if extURL != "" {
		p.URL = extURL
	} else {
		p.Path = storedPath(up.sha256)
		if created, err = s.keep(up); err != nil {
			return nil, err
		}
	}
	stored, err := s.db.AddPackage(ctx, p, channel, s.now())
	if err != nil {
		if created != "" {
			os.Remove(created)
		}
		return nil, err
	}
	s.log.Info("published", "app", appID, "version", stored.Version, "board", stored.Board, "channel", channel,
		"size", stored.Size, "sha256", stored.SHA256)
	return toPackage(stored), nil
}

// upload is a request body received into a temporary file, with its size and digests.
type upload struct {
	f      *os.File
	size   int64
	sha256 string // hex
	sha1   string // base64
}

// discard closes and removes the temporary file (a no-op for the name once kept).
func (u *upload) discard() {
	u.f.Close()
	os.Remove(u.f.Name())
}

// receive copies the request body into a temporary file under the store's tmp/, hashing it,
// and syncs it. The caller discards it.
func (s *Server) receive(w http.ResponseWriter, r *http.Request) (*upload, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.storeDir, "tmp"), uploadPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	up := &upload{f: tmp}
	// An upload runs as long as it moves (ReadTimeout is for small requests); what follows it
	// (verifying gigabytes) is this server's work, not the client's, so no write deadline.
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	body := &stallReader{r: r.Body, rc: rc, stall: s.limits.stall}
	d, err := omaha.DigestOf(io.TeeReader(http.MaxBytesReader(w, io.NopCloser(body), s.maxUpload), tmp))
	up.size = d.Size
	if err == nil && up.size == 0 {
		err = badRequest("empty upload: send the file as the request body")
	}
	if err == nil {
		if err = tmp.Sync(); err != nil {
			err = fmt.Errorf("upload: %w", err)
		}
	}
	if err != nil {
		up.discard()
		var mbe *http.MaxBytesError
		var ae *apiError
		if errors.As(err, &mbe) || errors.As(err, &ae) {
			return nil, err
		}
		return nil, badRequest("reading the upload: %v", err)
	}
	up.sha256, up.sha1 = hex.EncodeToString(d.SHA256[:]), base64.StdEncoding.EncodeToString(d.SHA1[:])
	return up, nil
}

// storedPath is where a file with this SHA-256 (hex) is kept, relative to the store dir.
func storedPath(sum string) string { return path.Join("sha256", sum) }

// keep moves an upload to its content address (sha256/<hex>), durably, unless a file is
// already there. It returns the path it created ("" if the file was there), for the caller
// to remove if recording the package fails.
func (s *Server) keep(up *upload) (string, error) {
	final := filepath.Join(s.storeDir, filepath.FromSlash(storedPath(up.sha256)))
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := up.f.Close(); err != nil {
		return "", fmt.Errorf("keep upload: %w", err)
	}
	if err := os.Rename(up.f.Name(), final); err != nil {
		return "", fmt.Errorf("keep upload: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(final)); err != nil {
		os.Remove(final)
		return "", fmt.Errorf("keep upload: %w", err)
	}
	return final, nil
}

// uploadPrefix names the temporary file of an upload in progress, in the store's tmp/.
const uploadPrefix = "upload-"

// handleDownload serves GET /packages/{sha256}/{name}: a stored payload file (or, when name is
// one of its extras, that extra: hosts fetch extras from the payload's codebase), with Range
// and ETag handled by http.ServeContent. The file is immutable, so it may be cached.
func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha256")
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size || strings.ToLower(sum) != sum {
		http.Error(w, "no such package", http.StatusNotFound)
		return
	}
	_, rel, err := s.db.PackageFile(r.Context(), sum, r.PathValue("name"))
	if errors.Is(err, store.ErrNotFound) || err == nil && rel == "" {
		http.Error(w, "no such package", http.StatusNotFound)
		return
	}
	if err != nil {
		s.log.Error("find package", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	f, err := os.Open(filepath.Join(s.storeDir, filepath.FromSlash(rel)))
	if err != nil {
		s.log.Error("open stored package", "sha256", sum, "err", err)
		http.Error(w, "package file missing on the server", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("ETag", `"`+path.Base(rel)+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("Content-Type", "application/octet-stream")
	// A download runs as long as it moves (WriteTimeout is for small answers).
	sw := &stallWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: s.limits.stall}
	http.ServeContent(sw, r, r.PathValue("name"), st.ModTime(), f)
}
