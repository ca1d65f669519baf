package omaha

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ServerName is the server attribute NewResponse puts on <response>.
const ServerName = "twinslot"

// ErrInvalidResponse reports an update offer update_engine would reject (its error 34,
// OmahaResponseInvalid): a missing manifest, URL, package name, size or postinstall hash, or
// hashes that are not encoded as Flatcar's consumers expect.
var ErrInvalidResponse = errors.New("invalid Omaha response")

// NewResponse returns an empty response: protocol 3.0, server="twinslot",
// <daystart elapsed_seconds="0">.
func NewResponse() *Response {
	return &Response{Protocol: Protocol, Server: ServerName, DayStart: &DayStart{}}
}

// AddApp appends an <app> answering appID (echo the request's appid unchanged) with status.
func (r *Response) AddApp(appID string, status Status) *App {
	a := &App{AppID: appID, Status: status}
	r.Apps = append(r.Apps, a)
	return a
}

// App returns the first <app> whose appid equals appID, ignoring case and braces, or nil.
func (r *Response) App(appID string) *App {
	want := trimBraces(appID)
	for _, a := range r.Apps {
		if strings.EqualFold(trimBraces(a.AppID), want) {
			return a
		}
	}
	return nil
}

// Acknowledge adds to a response app one status="ok" <ping> if req has a ping and one
// status="ok" <event> per event of req, as servers in this family do. It does not answer
// the update check: use AddUpdateCheck or AddUpdate for that.
func (a *App) Acknowledge(req *App) {
	if req.Ping != nil {
		a.Ping = &Ping{Status: StatusOK}
	}
	for range req.Events {
		a.Events = append(a.Events, &Event{Status: StatusOK})
	}
}

// AddUpdateCheck sets a response app's <updatecheck> to the given status (StatusNoUpdate, or
// an error status) and returns it.
func (a *App) AddUpdateCheck(status Status) *UpdateCheck {
	a.UpdateCheck = &UpdateCheck{Status: status}
	return a.UpdateCheck
}

// Update is an update offer: what a server puts in an "ok" <updatecheck> and what a client
// takes out of one.
type Update struct {
	Version     string   // manifest version, e.g. 4152.2.0
	URLs        []string // codebases in order of preference; the package name is appended
	PackageName string   // file name under each codebase, e.g. flatcar_production_update.gz
	Size        int64    // bytes, > 0
	// SHA256 is the SHA-256 of the whole payload file. It is written twice: hex in the
	// package's hash_sha256 and base64 in the postinstall action's sha256, which is the check
	// update_engine performs.
	SHA256 [sha256.Size]byte
	// SHA1 is the SHA-1 of the file, written base64 in the package's hash attribute; all
	// zeros means unknown (the attribute is omitted, and a response without it reads as zeros).
	SHA1 [sha1.Size]byte
}

// DownloadURLs returns each codebase joined with the package name, as update_engine builds
// them: codebase + "/" (when missing) + name.
func (u *Update) DownloadURLs() []string {
	out := make([]string, 0, len(u.URLs))
	for _, c := range u.URLs {
		if !strings.HasSuffix(c, "/") {
			c += "/"
		}
		out = append(out, c+u.PackageName)
	}
	return out
}

// AddUpdate sets a response app's <updatecheck> to status="ok" offering u: urls, manifest
// version, one package (name, base64 SHA-1 hash, hex hash_sha256, size, required="true") and
// a postinstall action with the base64 sha256 and DisablePayloadBackoff="true" (as Nebraska
// and flatcar-update send). It refuses an offer update_engine would reject.
func (a *App) AddUpdate(u Update) (*UpdateCheck, error) {
	if err := u.check(); err != nil {
		return nil, fmt.Errorf("omaha: add update: %w", err)
	}
	uc := &UpdateCheck{Status: StatusOK}
	for _, c := range u.URLs {
		uc.URLs = append(uc.URLs, URL{Codebase: c})
	}
	pkg := Package{Name: u.PackageName, SHA256: hex.EncodeToString(u.SHA256[:]), Size: u.Size, Required: true}
	if u.SHA1 != [sha1.Size]byte{} {
		pkg.SHA1 = base64.StdEncoding.EncodeToString(u.SHA1[:])
	}
	uc.Manifest = &Manifest{
		Version:  u.Version,
		Packages: []Package{pkg},
		Actions: []Action{{
			Event:                 ActionPostinstall,
			SHA256:                base64.StdEncoding.EncodeToString(u.SHA256[:]),
			DisablePayloadBackoff: true,
		}},
	}
	a.UpdateCheck = uc
	return uc, nil
}

func (u *Update) check() error {
	switch {
	case u.Version == "":
		return fmt.Errorf("%w: no manifest version", ErrInvalidResponse)
	case len(u.URLs) == 0:
		return fmt.Errorf("%w: no url codebase", ErrInvalidResponse)
	case u.PackageName == "":
		return fmt.Errorf("%w: no package name", ErrInvalidResponse)
	case u.Size <= 0:
		return fmt.Errorf("%w: package size %d, want > 0", ErrInvalidResponse, u.Size)
	case u.SHA256 == [sha256.Size]byte{}:
		return fmt.Errorf("%w: no SHA-256", ErrInvalidResponse)
	}
	for _, c := range u.URLs {
		if c == "" {
			return fmt.Errorf("%w: empty url codebase", ErrInvalidResponse)
		}
	}
	return nil
}

// Postinstall returns the manifest's postinstall action, or nil.
func (m *Manifest) Postinstall() *Action {
	for i := range m.Actions {
		if m.Actions[i].Event == ActionPostinstall {
			return &m.Actions[i]
		}
	}
	return nil
}

// Update reads the offer from an "ok" <updatecheck> with update_engine's rules (omaha.md
// §1.5): a manifest, at least one url codebase, the first package with a name and size > 0,
// and a postinstall action whose sha256 is base64 of 32 bytes. Unlike update_engine it also
// checks the package's hash_sha256 (hex, equal to the postinstall sha256) and hash (base64 of
// 20 bytes) when present. Errors wrap ErrInvalidResponse.
func (uc *UpdateCheck) Update() (*Update, error) {
	if uc.Status != StatusOK {
		return nil, fmt.Errorf("%w: updatecheck status %q, want %q", ErrInvalidResponse, uc.Status, StatusOK)
	}
	m := uc.Manifest
	if m == nil {
		return nil, fmt.Errorf("%w: no manifest", ErrInvalidResponse)
	}
	if len(m.Packages) == 0 {
		return nil, fmt.Errorf("%w: no package", ErrInvalidResponse)
	}
	p := m.Packages[0]
	u := &Update{Version: m.Version, PackageName: p.Name, Size: p.Size}
	for _, url := range uc.URLs {
		u.URLs = append(u.URLs, url.Codebase)
	}
	pi := m.Postinstall()
	if pi == nil {
		return nil, fmt.Errorf("%w: no postinstall action", ErrInvalidResponse)
	}
	if err := decodeInto(u.SHA256[:], pi.SHA256, base64.StdEncoding.DecodeString); err != nil {
		return nil, fmt.Errorf("%w: postinstall sha256: %w", ErrInvalidResponse, err)
	}
	if p.SHA256 != "" {
		var h [sha256.Size]byte
		if err := decodeInto(h[:], p.SHA256, hex.DecodeString); err != nil {
			return nil, fmt.Errorf("%w: package hash_sha256 (hex): %w", ErrInvalidResponse, err)
		}
		if h != u.SHA256 {
			return nil, fmt.Errorf("%w: package hash_sha256 differs from postinstall sha256", ErrInvalidResponse)
		}
	}
	if p.SHA1 != "" {
		if err := decodeInto(u.SHA1[:], p.SHA1, base64.StdEncoding.DecodeString); err != nil {
			return nil, fmt.Errorf("%w: package hash (base64 SHA-1): %w", ErrInvalidResponse, err)
		}
	}
	if err := u.check(); err != nil {
		return nil, err
	}
	return u, nil
}

func decodeInto(dst []byte, s string, decode func(string) ([]byte, error)) error {
	b, err := decode(s)
	if err != nil {
		return fmt.Errorf("cannot decode %.80q", s)
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// String summarizes the offer for logs.
func (u *Update) String() string {
	return u.Version + " " + u.PackageName + " (" + strconv.FormatInt(u.Size, 10) + " bytes)"
}
