package osrelease

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on untrusted input.
const (
	MaxSize     = 64 << 10 // an os-release file larger than this is refused
	MaxLineLen  = 4096     // one line longer than this is refused
	MaxFieldLen = 64       // ID, version and board length limit
)

// Path is where the os-release of a /usr image is, relative to the filesystem's root (mounted
// at /usr on a host, so /usr/lib/os-release).
const Path = "lib/os-release"

// Release is what an os-release file says about the image that carries it.
type Release struct {
	ID      string // "twinslot", "flatcar"
	Version string // VERSION_ID, else VERSION: "3815.2.0"
	Board   string // BOARD, else FLATCAR_BOARD: "amd64-usr"
	BuildID string // BUILD_ID, when present; informative only
}

// ErrTooLarge: the file is above MaxSize bytes.
var ErrTooLarge = errors.New("os-release is larger than 64 KiB")

// SyntaxError is a line Values cannot read.
type SyntaxError struct {
	Line int    // 1-based
	Msg  string // what is wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("os-release: line %d: %s (lines are KEY=VALUE, see os-release(5))", e.Line, e.Msg)
}

// FieldError is a required field that is missing or unfit.
type FieldError struct {
	Field string // "ID", "VERSION_ID or VERSION", "BOARD or FLATCAR_BOARD"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Msg }

// Parse parses an os-release file and returns twinslot's fields (see the package comment for
// the rules). The error is ErrTooLarge, a *SyntaxError or wraps a *FieldError.
func Parse(b []byte) (Release, error) {
	vals, err := Values(b)
	if err != nil {
		return Release{}, err
	}
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := vals[k]; v != "" {
				return v
			}
		}
		return ""
	}
	r := Release{ID: vals["ID"], Version: first("VERSION_ID", "VERSION"), Board: first("BOARD", "FLATCAR_BOARD"), BuildID: vals["BUILD_ID"]}
	for _, f := range []struct{ name, v string }{{"ID", r.ID}, {"VERSION_ID or VERSION", r.Version}, {"BOARD or FLATCAR_BOARD", r.Board}} {
		if err := CheckField(f.name, f.v); err != nil {
			return Release{}, fmt.Errorf("os-release: %w", err)
		}
	}
	return r, nil
}

// Values reads every KEY=VALUE of an os-release style file (os-release, oem-release), with
// quotes and escapes resolved. It checks the syntax only, no field.
func Values(b []byte) (map[string]string, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w (%d bytes): is it the right file?", ErrTooLarge, len(b))
	}
	vals := make(map[string]string)
	n := 0
	for line := range strings.Lines(string(b)) {
		n++
		if len(line) > MaxLineLen {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("longer than %d bytes", MaxLineLen)}
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("no '=' in %q", trunc(line))}
		}
		if !ValidKey(k) {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("%q is not a key (letters, digits and _, no spaces around '=')", trunc(k))}
		}
		val, err := unquote(v)
		if err != nil {
			return nil, &SyntaxError{Line: n, Msg: fmt.Sprintf("%s: %v", k, err)}
		}
		vals[k] = val
	}
	return vals, nil
}

// ValidKey reports whether k is a shell variable name, [A-Za-z_][A-Za-z0-9_]*: the keys of
// os-release and of the other KEY=VALUE files hosts carry (update.conf).
func ValidKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// unquote resolves one value: wholly single-quoted, wholly double-quoted, or unquoted.
func unquote(v string) (string, error) {
	var out strings.Builder
	switch {
	case v == "":
		return "", nil
	case v[0] == '\'':
		end := strings.IndexByte(v[1:], '\'')
		if end < 0 {
			return "", errors.New("unterminated single quote")
		}
		if rest := v[2+end:]; rest != "" {
			return "", fmt.Errorf("text %q after the closing quote", trunc(rest))
		}
		return v[1 : 1+end], nil
	case v[0] == '"':
		for i := 1; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 == len(v) {
					return "", errors.New("unterminated double quote")
				}
				if strings.IndexByte("\"\\$`", v[i+1]) < 0 {
					out.WriteByte('\\') // shell keeps a backslash before other characters
				}
				i++
				out.WriteByte(v[i])
			case '"':
				if rest := v[i+1:]; rest != "" {
					return "", fmt.Errorf("text %q after the closing quote", trunc(rest))
				}
				return out.String(), nil
			default:
				out.WriteByte(c)
			}
		}
		return "", errors.New("unterminated double quote")
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			if i+1 == len(v) {
				return "", errors.New("a backslash ends the line (continuation lines are not allowed)")
			}
			i++
			out.WriteByte(v[i])
		case ' ', '\t', '"', '\'', '$', '`':
			return "", fmt.Errorf("unquoted %q: put the value in double quotes", string(c))
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), nil
}

// CheckField checks a value that goes into os-release, file names and Omaha requests (ID,
// version, board): non-empty, at most MaxFieldLen bytes of letters, digits and . - _ + ~.
func CheckField(name, v string) error {
	if v == "" {
		return &FieldError{Field: name, Msg: "is empty (or missing)"}
	}
	if len(v) > MaxFieldLen {
		return &FieldError{Field: name, Msg: fmt.Sprintf("%q is longer than %d bytes", trunc(v), MaxFieldLen)}
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_+~", c)) {
			return &FieldError{Field: name, Msg: fmt.Sprintf("%q may only hold letters, digits and . - _ + ~", trunc(v))}
		}
	}
	return nil
}

// Format renders r as an os-release file that Parse reads back as r (ID, VERSION, VERSION_ID,
// BOARD, BUILD_ID when set), with extra lines (such as NAME="…") appended as given.
func Format(r Release, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "ID=%s\nVERSION=%s\nVERSION_ID=%s\nBOARD=%s\n", r.ID, r.Version, r.Version, r.Board)
	if r.BuildID != "" {
		fmt.Fprintf(&b, "BUILD_ID=%s\n", Quote(r.BuildID))
	}
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	return []byte(b.String())
}

// Quote returns v in double quotes with the characters that need it escaped, so that Values
// reads it back as v (v must not hold a newline).
func Quote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if strings.IndexByte("\"\\$`", v[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
