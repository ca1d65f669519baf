package mirror

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
)

// Local is where verified offers go: the local update server.
type Local interface {
	// Carries reports whether the pair's local channel already carries o (same version and
	// SHA-256 of the main file) for the pair's board.
	Carries(ctx context.Context, o *Offer) (bool, error)
	// Publish creates the package from the verified files (paths in the order of o.Files) and
	// points the pair's local channel at it.
	Publish(ctx context.Context, o *Offer, paths []string) error
}

// AdminLocal publishes through an omahad admin API: a twinslot payload is uploaded (and verified
// by the server against the app's trust root); a Flatcar (CrAU) payload and its extra files are
// uploaded as files and made a Flatcar package.
type AdminLocal struct {
	Client *admin.Client
}

// Carries implements Local.
func (l AdminLocal) Carries(ctx context.Context, o *Offer) (bool, error) {
	chs, err := l.Client.Channels(ctx, o.Pair.App)
	if err != nil {
		return false, localError(o, err)
	}
	for _, ch := range chs {
		if ch.Name != o.Pair.Local {
			continue
		}
		p, ok := ch.Packages[o.Pair.Board]
		return ok && p.Version == o.Version && p.SHA256 == hex.EncodeToString(o.Files[0].SHA256[:]), nil
	}
	return false, fmt.Errorf("local server: app %s has no channel %q: pick one of its channels as the pair's =localchannel", o.Pair.App, o.Pair.Local)
}

// Publish implements Local: the file's kind (its magic) picks how it is created.
func (l AdminLocal) Publish(ctx context.Context, o *Offer, paths []string) error {
	kind, err := fileKind(paths[0])
	if err != nil {
		return err
	}
	switch kind {
	case kindTwinslot:
		if len(paths) > 1 {
			return fmt.Errorf("local server: the offer of %s has %d files, and a twinslot package is one payload file", o.Version, len(paths))
		}
		return l.publishTwinslot(ctx, o, paths[0])
	case kindFlatcar:
		return l.publishFlatcar(ctx, o, paths)
	}
	return fmt.Errorf("local server: %s is neither a twinslot payload nor a Flatcar (CrAU) payload", o.Files[0].Name)
}

// publishTwinslot uploads the payload, which the server verifies against the app's trust root
// and then points the local channel at. The upload moves the channel in the same request, so
// the payload's manifest is checked against the offer first: bytes of another version, board
// or app never reach the server.
func (l AdminLocal) publishTwinslot(ctx context.Context, o *Offer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := checkManifest(o, f, st.Size()); err != nil {
		return err
	}
	p, err := l.Client.Publish(ctx, o.Pair.App, f, st.Size(), admin.PublishOptions{Channel: o.Pair.Local, Name: o.Files[0].Name})
	if err != nil {
		return localError(o, err)
	}
	if p.Version != o.Version || p.Board != o.Pair.Board {
		return fmt.Errorf("local server: published %s for %s, but the upstream offered it as %s for %s: check the upstream's packages",
			p.Version, p.Board, o.Version, o.Pair.Board)
	}
	return nil
}

// checkManifest refuses a twinslot payload (size bytes in r) whose manifest names another app, board or version
// than the upstream offered. The manifest is read without checking its signature: that is safe
// only because a match is never trusted here, the server verifies the same bytes before it
// publishes anything; a mismatch is refused whether or not the signature is good.
func checkManifest(o *Offer, r io.ReaderAt, size int64) error {
	f, err := payload.Open(r, size)
	if err != nil {
		return fmt.Errorf("nothing was published: open %s: %w", o.Files[0].Name, err)
	}
	m, err := f.Unverified()
	if err != nil {
		return fmt.Errorf("nothing was published: %s: %w", o.Files[0].Name, err)
	}
	if app, err := omaha.ParseAppID(m.AppID); err != nil || app != o.Pair.App || m.Board != o.Pair.Board || m.Version != o.Version {
		return fmt.Errorf("nothing was published: %s holds %s for board %s (app %s), but the upstream offered it as %s for board %s (app %s): check the upstream's packages",
			o.Files[0].Name, m.Version, m.Board, m.AppID, o.Version, o.Pair.Board, o.Pair.App)
	}
	return nil
}

// publishFlatcar uploads every file of the offer, checks that the server got the bytes the
// mirror verified, and creates the Flatcar package (main payload + extras) on the local channel.
func (l AdminLocal) publishFlatcar(ctx context.Context, o *Offer, paths []string) error {
	files := make([]admin.File, len(paths))
	for i, path := range paths {
		f, err := l.upload(ctx, o, path)
		if err != nil {
			return err
		}
		want := o.Files[i]
		if f.Size != want.Size || f.SHA256 != hex.EncodeToString(want.SHA256[:]) {
			return fmt.Errorf("local server: it stored %s as %d bytes with sha256 %s, the mirror verified %d bytes with sha256 %x: nothing was published",
				want.Name, f.Size, f.SHA256, want.Size, want.SHA256)
		}
		f.Name = want.Name
		files[i] = f
	}
	p, err := l.Client.PublishFlatcar(ctx, o.Pair.App, admin.FlatcarPackage{
		Version: o.Version, Board: o.Pair.Board, Channel: o.Pair.Local, Name: files[0].Name,
		Size: files[0].Size, SHA256: files[0].SHA256, SHA1: files[0].SHA1, Extras: files[1:],
	})
	if err != nil {
		return localError(o, err)
	}
	if p.Version != o.Version || p.Board != o.Pair.Board {
		return fmt.Errorf("local server: created %s for %s, want %s for %s", p.Version, p.Board, o.Version, o.Pair.Board)
	}
	return nil
}

func (l AdminLocal) upload(ctx context.Context, o *Offer, path string) (admin.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return admin.File{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return admin.File{}, err
	}
	af, err := l.Client.UploadFile(ctx, o.Pair.App, f, st.Size())
	if err != nil {
		return admin.File{}, localError(o, err)
	}
	return af, nil
}

func localError(o *Offer, err error) error {
	switch {
	case errors.Is(err, admin.ErrNotFound):
		return fmt.Errorf("local server: %w: create app %s there first ('releasectl app create --id %s', with the upstream's trust root for twinslot payloads) and a server that knows Flatcar packages for CrAU ones", err, o.Pair.App, o.Pair.App)
	case errors.Is(err, admin.ErrRefused):
		return fmt.Errorf("local server refused the payload: %w: the local app's trust root must be the upstream's ('releasectl app set-trust')", err)
	case errors.Is(err, admin.ErrUnauthorized):
		return fmt.Errorf("local server refused the token: %w: check --token / RELEASECTL_TOKEN", err)
	}
	return fmt.Errorf("local server: %w", err)
}

type kind int

const (
	kindUnknown kind = iota
	kindTwinslot
	kindFlatcar
)

// flatcarMagic opens update_engine's payload format.
const flatcarMagic = "CrAU"

func fileKind(path string) (kind, error) {
	f, err := os.Open(path)
	if err != nil {
		return kindUnknown, err
	}
	defer f.Close()
	var b [len(payload.Magic)]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return kindUnknown, err
	}
	switch {
	case string(b[:n]) == payload.Magic:
		return kindTwinslot, nil
	case n >= len(flatcarMagic) && string(b[:len(flatcarMagic)]) == flatcarMagic:
		return kindFlatcar, nil
	}
	return kindUnknown, nil
}
