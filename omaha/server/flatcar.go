package server

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/store"
)

// update_engine's payload header (Flatcar's delta_metadata.h): the magic, a big-endian uint64
// major version, a big-endian uint64 manifest size, then the manifest.
const (
	crauMagic        = "CrAU"
	crauHeaderLen    = 4 + 8 + 8
	crauMajorFlatcar = 1 // kDeltaVersion: the only version Flatcar's update_engine reads
)

// checkCrAU reads the payload header of a Flatcar update file and refuses what
// update_engine could not apply.
func checkCrAU(r io.ReaderAt, size int64) error {
	var h [crauHeaderLen]byte
	if size < crauHeaderLen {
		return refused("the file has %d bytes, fewer than update_engine's %d-byte payload header", size, crauHeaderLen)
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("read payload header: %w", err)
	}
	if string(h[:4]) != crauMagic {
		return refused("not an update_engine payload: it starts with %q, not %q (a Flatcar payload is the raw flatcar_production_update.gz as released, not gunzipped or re-packed)", h[:4], crauMagic)
	}
	if v := binary.BigEndian.Uint64(h[4:12]); v != crauMajorFlatcar {
		return refused("update_engine payload major version %d: Flatcar's update_engine reads only version %d", v, crauMajorFlatcar)
	}
	if m := binary.BigEndian.Uint64(h[12:20]); m == 0 || m > uint64(size-crauHeaderLen) {
		return refused("update_engine payload manifest size %d does not fit in the %d-byte file: the file is truncated or not a payload", m, size)
	}
	return nil
}

func refused(format string, args ...any) error {
	return &apiError{http.StatusUnprocessableEntity, fmt.Sprintf(format, args...)}
}

// uploadFile receives any file (a Flatcar payload or extra) and keeps it by its SHA-256, for a
// later publishFlatcar that names it. The answer carries the size and digests computed here.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) (any, error) {
	appID, err := appParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.db.App(r.Context(), appID); err != nil {
		return nil, err
	}
	up, err := s.receive(w, r)
	if err != nil {
		return nil, err
	}
	defer up.discard()
	if _, err := s.keep(up); err != nil {
		return nil, err
	}
	s.log.Info("file uploaded", "app", appID, "size", up.size, "sha256", up.sha256)
	return admin.File{Size: up.size, SHA256: up.sha256, SHA1: up.sha1}, nil
}

// publishFlatcar records a Flatcar package (admin.FlatcarPackage) after checking the stored
// files against the sizes and hashes given, and the payload's header. Nothing is recorded when
// a check fails.
func (s *Server) publishFlatcar(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	appID, err := appParam(r)
	if err != nil {
		return nil, err
	}
	var in admin.FlatcarPackage
	if err := decodeJSON(w, r, &in); err != nil {
		return nil, err
	}
	if _, err := s.db.App(ctx, appID); err != nil {
		return nil, err
	}
	if err := omaha.CheckVersion(in.Version); err != nil {
		return nil, badRequest("version: %v", err)
	}
	if err := omaha.CheckText("board", in.Board, omaha.MaxShortLen); err != nil || in.Board == "" {
		return nil, badRequest("board %.40q is empty or not printable (Flatcar's boards: amd64-usr, arm64-usr)", in.Board)
	}
	if in.Channel != "" && !store.IsChannel(in.Channel) {
		return nil, badRequest("unknown channel %q (channels: %s)", in.Channel, strings.Join(store.Channels, ", "))
	}
	if in.Channel != "" {
		noteOf(r).setTarget(appID, "channels", in.Channel)
	}
	main := admin.File{Name: in.Name, Size: in.Size, SHA256: in.SHA256, SHA1: in.SHA1}
	files := append([]admin.File{main}, in.Extras...)
	for _, f := range files {
		if err := checkFileFields(f); err != nil {
			return nil, err
		}
	}
	p := store.Package{AppID: appID, Version: in.Version, Board: in.Board, FileName: in.Name, Size: in.Size,
		SHA256: strings.ToLower(in.SHA256), SHA1: in.SHA1, Format: store.FormatFlatcar}
	if in.URL != "" {
		if err := checkExternal(in.URL, in.Name); err != nil {
			return nil, err
		}
		p.URL = in.URL
	} else {
		p.Path = storedPath(p.SHA256)
		for i, f := range files {
			if err := s.checkStored(f, i == 0); err != nil {
				s.log.Warn("refused a Flatcar package", "app", appID, "version", in.Version, "file", f.Name, "err", err)
				return nil, err
			}
		}
	}
	for _, f := range in.Extras {
		e := store.File{Name: f.Name, Size: f.Size, SHA256: strings.ToLower(f.SHA256), SHA1: f.SHA1}
		if p.Path != "" {
			e.Path = storedPath(e.SHA256)
		}
		p.Extras = append(p.Extras, e)
	}
	stored, err := s.db.AddPackage(ctx, p, in.Channel, s.now())
	if err != nil {
		return nil, err
	}
	s.log.Info("published Flatcar package", "app", appID, "version", stored.Version, "board", stored.Board, "channel", in.Channel,
		"size", stored.Size, "sha256", stored.SHA256, "extras", len(stored.Extras), "external", stored.URL != "")
	return toPackage(stored), nil
}

// checkFileFields checks one file's name, size and digest encodings.
func checkFileFields(f admin.File) error {
	if err := checkName(f.Name); err != nil {
		return err
	}
	if f.Size <= 0 {
		return badRequest("file %s: size %d, want > 0", f.Name, f.Size)
	}
	if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
		return badRequest("file %s: sha256 %.80q is not 64 hex digits", f.Name, f.SHA256)
	}
	if b, err := base64.StdEncoding.DecodeString(f.SHA1); err != nil || len(b) != sha1.Size {
		return badRequest("file %s: sha1 %.80q is not a base64 SHA-1 (28 characters, as in Omaha's hash attribute)", f.Name, f.SHA1)
	}
	return nil
}

// checkExternal checks an external payload URL: absolute http(s), naming the file (hosts
// build it as codebase + name; extras come from the same codebase).
func checkExternal(raw, name string) error {
	if err := store.CheckURL(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw)
	if u.RawQuery != "" || u.Fragment != "" || path.Base(u.Path) != name {
		return badRequest("external URL %q must end in the file name %q (no query): hosts download codebase + name", raw, name)
	}
	return nil
}

// checkStored checks that the file f names was uploaded and is what f says: size, SHA-256,
// SHA-1 and, for the payload, update_engine's header.
func (s *Server) checkStored(f admin.File, payload bool) error {
	sum := strings.ToLower(f.SHA256)
	file, err := os.Open(filepath.Join(s.storeDir, filepath.FromSlash(storedPath(sum))))
	if errors.Is(err, os.ErrNotExist) {
		return &apiError{http.StatusNotFound, fmt.Sprintf("file %s (sha256 %s) was not uploaded: upload it first (POST …/files; 'releasectl publish --flatcar' does both)", f.Name, sum)}
	}
	if err != nil {
		return fmt.Errorf("open stored file: %w", err)
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return fmt.Errorf("stat stored file: %w", err)
	}
	if st.Size() != f.Size {
		return refused("file %s: size %d given, the uploaded file has %d bytes", f.Name, f.Size, st.Size())
	}
	d, err := omaha.DigestOf(file)
	if err != nil {
		return fmt.Errorf("hash stored file: %w", err)
	}
	if got := hex.EncodeToString(d.SHA256[:]); got != sum {
		return refused("file %s: the stored file's sha256 is %s, not %s: it is damaged; upload it again", f.Name, got, sum)
	}
	if got := base64.StdEncoding.EncodeToString(d.SHA1[:]); got != f.SHA1 {
		return refused("file %s: sha1 %s given, the file's is %s", f.Name, f.SHA1, got)
	}
	if payload {
		return checkCrAU(file, st.Size())
	}
	return nil
}
