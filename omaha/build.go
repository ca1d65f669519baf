package omaha

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
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
	// Extras are further files under the same codebases (Flatcar's OEM and sysext images),
	// listed after the payload with required="false". update_engine ignores them; the new
	// image's postinstall downloads the ones it needs.
	Extras []ExtraFile
	// DisablePayloadBackoff is written on the postinstall action: update_engine then retries
	// a failed download at its next check instead of backing off for days.
	DisablePayloadBackoff bool
}

// Digest is what a <package> says of a file's bytes: its size, SHA-256 (hash_sha256) and SHA-1
// (hash).
type Digest struct {
	Size   int64
	SHA256 [sha256.Size]byte
	SHA1   [sha1.Size]byte
}

// DigestOf reads r to its end and returns the Digest of what it read. A read error is returned
// as it came, with the digest of what was read before it.
func DigestOf(r io.Reader) (Digest, error) {
	h256, h1 := sha256.New(), sha1.New()
	n, err := io.Copy(io.MultiWriter(h256, h1), r)
	d := Digest{Size: n}
	h256.Sum(d.SHA256[:0])
	h1.Sum(d.SHA1[:0])
	return d, err
}

// ExtraFile is an extra <package> of an offer.
type ExtraFile struct {
	Name   string
	Size   int64
	SHA256 [sha256.Size]byte // written hex in hash_sha256
	SHA1   [sha1.Size]byte   // written base64 in hash; all zeros = omitted
}

func (f ExtraFile) wire() Package {
	p := Package{Name: f.Name, SHA256: hex.EncodeToString(f.SHA256[:]), Size: f.Size}
	if f.SHA1 != [sha1.Size]byte{} {
		p.SHA1 = base64.StdEncoding.EncodeToString(f.SHA1[:])
	}
	return p
}

// DownloadURLs returns each codebase joined with the package name, as update_engine builds
// them: codebase + "/" (when missing) + name.
func (u *Update) DownloadURLs() []string { return u.FileURLs(u.PackageName) }

// FileURLs returns each codebase joined with name, as DownloadURLs does for the payload: the
// URLs of an extra package.
func (u *Update) FileURLs(name string) []string {
	out := make([]string, 0, len(u.URLs))
	for _, c := range u.URLs {
		if !strings.HasSuffix(c, "/") {
			c += "/"
		}
		out = append(out, c+name)
	}
	return out
}

// AddUpdate sets a response app's <updatecheck> to status="ok" offering u: urls, manifest
// version, the payload package (name, base64 SHA-1 hash, hex hash_sha256, size,
// required="true"), then u's extras (required="false"), and a postinstall action with the
// base64 sha256 and, when u asks for it, DisablePayloadBackoff="true" (Nebraska's shape). It
// refuses an offer update_engine would reject.
func (a *App) AddUpdate(u Update) (*UpdateCheck, error) {
	if err := u.check(); err != nil {
		return nil, fmt.Errorf("omaha: add update: %w", err)
	}
	uc := &UpdateCheck{Status: StatusOK}
	for _, c := range u.URLs {
		uc.URLs = append(uc.URLs, URL{Codebase: c})
	}
	pkg := ExtraFile{Name: u.PackageName, Size: u.Size, SHA256: u.SHA256, SHA1: u.SHA1}.wire()
	pkg.Required = true
	pkgs := []Package{pkg}
	for _, f := range u.Extras {
		pkgs = append(pkgs, f.wire())
	}
	uc.Manifest = &Manifest{
		Version:  u.Version,
		Packages: pkgs,
		Actions: []Action{{
			Event:                 ActionPostinstall,
			SHA256:                base64.StdEncoding.EncodeToString(u.SHA256[:]),
			DisablePayloadBackoff: u.DisablePayloadBackoff,
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
	for _, f := range u.Extras {
		if f.Name == "" || f.Size <= 0 || f.Name == u.PackageName {
			return fmt.Errorf("%w: extra package %q: want a name other than the payload's and a size > 0", ErrInvalidResponse, f.Name)
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

// Update reads the offer from an "ok" <updatecheck> with update_engine's rules
// (omaha_request_action.cc, ParseResponse): a manifest, at least one url codebase, the first package with a name and size > 0,
// and a postinstall action whose sha256 is base64 of 32 bytes. Unlike update_engine it also
// checks the package's hash_sha256 (hex, or base64 as go-omaha writes it; equal to the
// postinstall sha256) and hash (base64 of 20 bytes) when present, and reads the further
// packages as Extras. Errors wrap ErrInvalidResponse.
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
	u.DisablePayloadBackoff = pi.DisablePayloadBackoff
	if err := decodeInto(u.SHA256[:], pi.SHA256, base64.StdEncoding.DecodeString); err != nil {
		return nil, fmt.Errorf("%w: postinstall sha256: %w", ErrInvalidResponse, err)
	}
	main, err := readPackage(p)
	if err != nil {
		return nil, err
	}
	if p.SHA256 != "" && main.SHA256 != u.SHA256 {
		return nil, fmt.Errorf("%w: package hash_sha256 differs from postinstall sha256", ErrInvalidResponse)
	}
	u.SHA1 = main.SHA1
	for _, ep := range m.Packages[1:] {
		f, err := readPackage(ep)
		if err != nil {
			return nil, err
		}
		if ep.SHA256 == "" && ep.SHA1 == "" {
			return nil, fmt.Errorf("%w: extra package %q has neither hash nor hash_sha256", ErrInvalidResponse, ep.Name)
		}
		u.Extras = append(u.Extras, f)
	}
	if err := u.check(); err != nil {
		return nil, err
	}
	return u, nil
}

// readPackage decodes a <package>'s hashes: hash_sha256 hex (Flatcar's consumers) or base64
// (go-omaha's servers), hash base64. Absent hashes stay zero.
func readPackage(p Package) (ExtraFile, error) {
	f := ExtraFile{Name: p.Name, Size: p.Size}
	if p.SHA256 != "" {
		decode := hex.DecodeString
		if len(p.SHA256) != 2*sha256.Size {
			decode = base64.StdEncoding.DecodeString
		}
		if err := decodeInto(f.SHA256[:], p.SHA256, decode); err != nil {
			return f, fmt.Errorf("%w: package %q hash_sha256 (hex or base64): %w", ErrInvalidResponse, p.Name, err)
		}
	}
	if p.SHA1 != "" {
		if err := decodeInto(f.SHA1[:], p.SHA1, base64.StdEncoding.DecodeString); err != nil {
			return f, fmt.Errorf("%w: package %q hash (base64 SHA-1): %w", ErrInvalidResponse, p.Name, err)
		}
	}
	return f, nil
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
