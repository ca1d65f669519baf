package updateconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// DefaultPaths is the search path on a host: the administrator's file first, then the image default.
func DefaultPaths() []string {
	return []string{"/etc/twinslot/update.conf", "/usr/share/twinslot/update.conf"}
}

const (
	// MaxFileSize bounds one configuration file.
	MaxFileSize = 64 << 10
	// MaxLineLen bounds one line of a configuration file.
	MaxLineLen = 4096

	// DefaultGroup is the track used when GROUP is unset.
	DefaultGroup = "stable"
	// ServerDisabled as SERVER turns update checks off.
	ServerDisabled = "disabled"
)

// envKeys are the keys the environment may override.
var envKeys = map[string]bool{
	"SERVER": true, "GROUP": true, "MACHINE_ALIAS": true, "REBOOT_STRATEGY": true,
	"REBOOT_WINDOW_START": true, "REBOOT_WINDOW_LENGTH": true, "REBOOT_WINDOW_TZ": true,
	"LOCKSMITHD_REBOOT_WINDOW_START": true, "LOCKSMITHD_REBOOT_WINDOW_LENGTH": true,
	"LOCKSMITHD_REBOOT_WINDOW_TZ": true,
}

// Reboot strategies understood by locksmithd.
const (
	StrategyReboot    = "reboot"
	StrategyEtcdLock  = "etcd-lock"
	StrategyFleetLock = "fleetlock"
	StrategyOff       = "off"
)

// Config is the merged view of the update.conf files.
type Config struct {
	Server             string
	Group              string
	MachineAlias       string
	RebootStrategy     string
	RebootWindowStart  string
	RebootWindowLength string
	RebootWindowTZ     string
	DownloadUser       string
	DownloadPassword   string

	// Values holds every key that was set, including unknown ones.
	Values map[string]string
}

// SyntaxError reports a malformed line.
type SyntaxError struct {
	File string
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("updateconf: %s:%d: %s (expected KEY=VALUE)", e.File, e.Line, e.Msg)
}

// Parse reads KEY=VALUE lines from r. name is used in error messages.
func Parse(name string, r io.Reader) (map[string]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("updateconf: read %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("updateconf: %s is larger than %d bytes; is it the right file?", name, MaxFileSize)
	}
	out := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), MaxLineLen)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, &SyntaxError{File: name, Line: n, Msg: fmt.Sprintf("no '=' in %q", line)}
		}
		if !validKey(key) {
			return nil, &SyntaxError{File: name, Line: n, Msg: fmt.Sprintf("invalid key %q", key)}
		}
		val, err := unquote(strings.TrimSpace(val))
		if err != nil {
			return nil, &SyntaxError{File: name, Line: n, Msg: err.Error()}
		}
		out[key] = val
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("updateconf: %s: a line is longer than %d bytes", name, MaxLineLen)
		}
		return nil, fmt.Errorf("updateconf: read %s: %w", name, err)
	}
	return out, nil
}

func validKey(k string) bool {
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

func unquote(v string) (string, error) {
	if len(v) >= 1 && (v[0] == '"' || v[0] == '\'') {
		q := v[0]
		if len(v) < 2 || v[len(v)-1] != q {
			return "", fmt.Errorf("unterminated quote in %s", v)
		}
		return v[1 : len(v)-1], nil
	}
	return v, nil
}

// Load merges the files at paths, first file winning per key. Missing files are skipped.
func Load(paths ...string) (*Config, error) {
	return LoadEnv(nil, paths...)
}

// LoadEnv is Load with environment overrides: a "KEY=VALUE" entry of environ whose key is one
// update.conf knows (including the LOCKSMITHD_ window keys) wins over every file, as systemd's
// Environment= wins over EnvironmentFile=. main passes os.Environ().
func LoadEnv(environ []string, paths ...string) (*Config, error) {
	merged := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && envKeys[k] {
			merged[k] = v
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("updateconf: open %s: %w", p, err)
		}
		vals, err := Parse(p, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		for k, v := range vals {
			if _, seen := merged[k]; !seen {
				merged[k] = v
			}
		}
	}
	return FromValues(merged)
}

// FromValues builds a Config from raw key/values, applying defaults and validating known keys.
func FromValues(vals map[string]string) (*Config, error) {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := vals[k]; ok && v != "" {
				return v
			}
		}
		return ""
	}
	c := &Config{
		Server:             vals["SERVER"],
		Group:              first("GROUP"),
		MachineAlias:       vals["MACHINE_ALIAS"],
		RebootStrategy:     first("REBOOT_STRATEGY"),
		RebootWindowStart:  first("LOCKSMITHD_REBOOT_WINDOW_START", "REBOOT_WINDOW_START"),
		RebootWindowLength: first("LOCKSMITHD_REBOOT_WINDOW_LENGTH", "REBOOT_WINDOW_LENGTH"),
		RebootWindowTZ:     first("LOCKSMITHD_REBOOT_WINDOW_TZ", "REBOOT_WINDOW_TZ"),
		DownloadUser:       vals["DOWNLOAD_USER"],
		DownloadPassword:   vals["DOWNLOAD_PASSWORD"],
		Values:             vals,
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.RebootStrategy == "" {
		c.RebootStrategy = StrategyReboot
	}
	switch c.RebootStrategy {
	case StrategyReboot, StrategyEtcdLock, StrategyFleetLock, StrategyOff:
	default:
		return nil, fmt.Errorf("updateconf: REBOOT_STRATEGY=%q is not one of reboot, etcd-lock, fleetlock, off", c.RebootStrategy)
	}
	if (c.RebootWindowStart == "") != (c.RebootWindowLength == "") {
		return nil, errors.New("updateconf: set both REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH, or neither")
	}
	return c, nil
}

// Disabled reports whether update checks are turned off (SERVER=disabled).
func (c *Config) Disabled() bool { return c.Server == ServerDisabled }
