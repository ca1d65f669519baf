package omaha

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// Limits on untrusted documents.
const (
	// MaxRequestBytes caps a request body (Nebraska uses the same 64 KiB; update_engine's
	// requests are under 1 KiB).
	MaxRequestBytes = 64 << 10
	// MaxResponseBytes caps a response body (go-omaha's cap; a full Flatcar response with
	// extension packages is a few KiB).
	MaxResponseBytes = 1 << 20
	// MaxApps caps the <app> elements of one document.
	MaxApps = 16
	// MaxEventsPerApp caps the <event> elements of one <app> (update_engine sends at most one).
	MaxEventsPerApp = 16
	// MaxURLs caps the <url> elements of one <updatecheck>.
	MaxURLs = 32
	// MaxPackages caps the <package> elements of one <manifest>.
	MaxPackages = 128
)

// Errors returned (wrapped) by ParseRequest and ParseResponse. A server answers
// ErrTooLarge with 413 and the others with 400.
var (
	ErrTooLarge            = errors.New("document exceeds a size limit")
	ErrMalformed           = errors.New("malformed Omaha XML")
	ErrUnsupportedProtocol = errors.New("unsupported Omaha protocol version")

	errEmptyDocument = errors.New("empty document") // wrapped with ErrMalformed
)

// ParseRequest reads and decodes one request document of at most MaxRequestBytes. It checks
// the XML syntax, the root element, protocol="3.0" and the element-count limits; it does not
// judge the values of host attributes (see (*App).Validate).
func ParseRequest(r io.Reader) (*Request, error) {
	var req Request
	if err := parseDoc(r, MaxRequestBytes, &req); err != nil {
		return nil, fmt.Errorf("omaha: parse request: %w", err)
	}
	if err := checkDoc(req.Protocol, req.Apps); err != nil {
		return nil, fmt.Errorf("omaha: parse request: %w", err)
	}
	return &req, nil
}

// ParseResponse reads and decodes one response document of at most MaxResponseBytes, with
// the same checks as ParseRequest plus the URL and package limits.
func ParseResponse(r io.Reader) (*Response, error) {
	var resp Response
	if err := parseDoc(r, MaxResponseBytes, &resp); err != nil {
		return nil, fmt.Errorf("omaha: parse response: %w", err)
	}
	if err := checkDoc(resp.Protocol, resp.Apps); err != nil {
		return nil, fmt.Errorf("omaha: parse response: %w", err)
	}
	for _, a := range resp.Apps {
		uc := a.UpdateCheck
		if uc == nil {
			continue
		}
		if len(uc.URLs) > MaxURLs {
			return nil, fmt.Errorf("omaha: parse response: %w: %d urls (max %d)", ErrTooLarge, len(uc.URLs), MaxURLs)
		}
		if uc.Manifest != nil && len(uc.Manifest.Packages) > MaxPackages {
			return nil, fmt.Errorf("omaha: parse response: %w: %d packages (max %d)", ErrTooLarge, len(uc.Manifest.Packages), MaxPackages)
		}
	}
	return &resp, nil
}

func parseDoc(r io.Reader, limit int64, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("%w: body over %d bytes", ErrTooLarge, limit)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: %w", ErrMalformed, errEmptyDocument)
		}
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// Only whitespace, comments and processing instructions may follow the root element.
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: after the root element: %w", ErrMalformed, err)
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return fmt.Errorf("%w: text after the root element", ErrMalformed)
			}
		default:
			return fmt.Errorf("%w: content after the root element", ErrMalformed)
		}
	}
}

func checkDoc(protocol string, apps []*App) error {
	if protocol != Protocol {
		return fmt.Errorf("%w: protocol=%.20q, want %q", ErrUnsupportedProtocol, protocol, Protocol)
	}
	if len(apps) > MaxApps {
		return fmt.Errorf("%w: %d apps (max %d)", ErrTooLarge, len(apps), MaxApps)
	}
	for _, a := range apps {
		if len(a.Events) > MaxEventsPerApp {
			return fmt.Errorf("%w: %d events in one app (max %d)", ErrTooLarge, len(a.Events), MaxEventsPerApp)
		}
	}
	return nil
}
