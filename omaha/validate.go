package omaha

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Length limits for host attributes a server stores. Values from update_engine are far
// shorter; anything longer is refused rather than truncated.
const (
	MaxVersionLen = 64  // version, alephversion, previousversion, oemversion
	MaxTrackLen   = 128 // track: a channel, a group name or a group id
	MaxAliasLen   = 128 // machinealias
	MaxShortLen   = 64  // oem, board, lang, hardware_class
)

// ErrInvalidField is wrapped by every *FieldError.
var ErrInvalidField = errors.New("invalid field")

// FieldError names the request attribute that failed validation. The value is quoted and cut
// short in the message because it is untrusted.
type FieldError struct {
	Field  string // attribute name as on the wire, e.g. "machineid"
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("omaha: invalid %s %.40q: %s", e.Field, e.Value, e.Reason)
}

func (e *FieldError) Unwrap() error { return ErrInvalidField }

// Validate checks the host attributes of a request app, which are untrusted: appid (a UUID,
// braces optional), machineid (32 lowercase hex), bootid (a UUID, braces optional, or empty),
// version (see CheckVersion), alephversion and every event's previousversion (empty or a
// version; "0.0.0.0" is a version), and lengths and printable text for track, machinealias,
// oem, oemversion, board, lang and hardware_class. Event types, results and error codes are
// not judged: servers accept unknown pairs. It returns the first *FieldError.
func (a *App) Validate() error {
	if _, err := ParseAppID(a.AppID); err != nil {
		return err
	}
	if err := CheckMachineID(a.MachineID); err != nil {
		return err
	}
	if a.BootID != "" && !isUUID(trimBraces(a.BootID)) {
		return &FieldError{"bootid", a.BootID, "want a UUID such as {60eb8c4b-919d-422f-9d4f-8fda10c50ab8}"}
	}
	if err := checkVersion("version", a.Version); err != nil {
		return err
	}
	if a.AlephVersion != "" {
		if err := checkVersion("alephversion", a.AlephVersion); err != nil {
			return err
		}
	}
	for _, ev := range a.Events {
		if ev.PreviousVersion != "" {
			if err := checkVersion("previousversion", ev.PreviousVersion); err != nil {
				return err
			}
		}
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"track", a.Track, MaxTrackLen},
		{"machinealias", a.MachineAlias, MaxAliasLen},
		{"oem", a.OEM, MaxShortLen},
		{"oemversion", a.OEMVersion, MaxVersionLen},
		{"board", a.Board, MaxShortLen},
		{"lang", a.Lang, MaxShortLen},
		{"hardware_class", a.HardwareClass, MaxShortLen},
	} {
		if err := CheckText(f.name, f.value, f.max); err != nil {
			return err
		}
	}
	return nil
}

// ParseAppID accepts an Omaha appid with or without braces, in any case, and returns the bare
// lowercase UUID (the form payload manifests and the server's store use). FormatAppID is the
// inverse.
func ParseAppID(s string) (string, error) {
	id := trimBraces(s)
	if !isUUID(id) {
		return "", &FieldError{"appid", s, "want a UUID such as {e96281a6-d1af-4bde-9a0a-97b76e56dc57}"}
	}
	return strings.ToLower(id), nil
}

// FormatAppID returns the wire form of a bare UUID app id: lowercase, in braces.
func FormatAppID(id string) string {
	return "{" + strings.ToLower(trimBraces(id)) + "}"
}

// CheckMachineID checks an /etc/machine-id value: exactly 32 lowercase hex digits.
func CheckMachineID(s string) error {
	if len(s) != 32 || strings.IndexFunc(s, notLowerHex) >= 0 {
		return &FieldError{"machineid", s, "want 32 lowercase hex digits as in /etc/machine-id"}
	}
	return nil
}

// CheckVersion checks a version string: 1 to MaxVersionLen characters from [0-9A-Za-z.+_-],
// starting with a digit or letter (4081.2.0, 1.2.3-rc.1+build).
func CheckVersion(s string) error { return checkVersion("version", s) }

func checkVersion(field, s string) error {
	if s == "" || len(s) > MaxVersionLen {
		return &FieldError{field, s, fmt.Sprintf("want 1 to %d characters", MaxVersionLen)}
	}
	if !isAlnum(rune(s[0])) {
		return &FieldError{field, s, "must start with a digit or letter"}
	}
	for _, r := range s {
		if !isAlnum(r) && !strings.ContainsRune(".+_-", r) {
			return &FieldError{field, s, "only digits, letters and . + _ - are allowed"}
		}
	}
	return nil
}

// CheckText checks a free-text attribute: valid UTF-8, at most max bytes, no control
// characters.
func CheckText(field, s string, max int) error {
	if len(s) > max {
		return &FieldError{field, s, fmt.Sprintf("longer than %d bytes", max)}
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return &FieldError{field, s, "control characters or invalid UTF-8"}
	}
	return nil
}

func trimBraces(s string) string {
	if len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' {
		return s[1 : len(s)-1]
	}
	return s
}

// isUUID reports whether s is 8-4-4-4-12 hex digits (either case).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !isHex(r) {
				return false
			}
		}
	}
	return true
}

func isHex(r rune) bool       { return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F' }
func notLowerHex(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }
func isAlnum(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
}
