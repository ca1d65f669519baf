package updateconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/twinslot/twinslot/partition/osrelease"
)

// DefaultPaths is the search path on a host, lowest precedence first: the image's default, then
// the files a CoreOS or Flatcar host already has, then twinslot's own. A later file wins key by key.
func DefaultPaths() []string {
	return []string{"/usr/share/twinslot/update.conf", "/etc/coreos/update.conf", "/etc/flatcar/update.conf", "/etc/twinslot/update.conf"}
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

	// Values holds every key that was set, including unknown ones; a LOCKSMITHD_ window key is
	// stored under its plain name (REBOOT_WINDOW_START).
	Values map[string]string
	// Origins says, for each key of Values, which file (or the environment) set it.
	Origins map[string]Origin
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
		if !osrelease.ValidKey(key) {
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

// FromEnvironment is the Origin.File of a value set by the environment.
const FromEnvironment = "environment"

// Origin is where an effective value came from.
type Origin struct {
	// File is the update.conf that set it, or FromEnvironment.
	File string `json:"file"`
	// Key is the key as written there: LOCKSMITHD_REBOOT_WINDOW_START sets REBOOT_WINDOW_START.
	Key string `json:"key"`
}

// aliases are keys that set another key; within one file (or the environment) the alias wins
// over the plain key, as in CoreOS locksmithd.
var aliases = map[string]string{
	"LOCKSMITHD_REBOOT_WINDOW_START":  "REBOOT_WINDOW_START",
	"LOCKSMITHD_REBOOT_WINDOW_LENGTH": "REBOOT_WINDOW_LENGTH",
	"LOCKSMITHD_REBOOT_WINDOW_TZ":     "REBOOT_WINDOW_TZ",
}

// Load merges the files at paths, a later file winning key by key. Missing files are skipped.
func Load(paths ...string) (*Config, error) {
	return LoadEnv(nil, paths...)
}

// LoadEnv is Load with environment overrides: a "KEY=VALUE" entry of environ whose key is one
// update.conf knows (including the LOCKSMITHD_ window keys) wins over every file, as systemd's
// Environment= wins over EnvironmentFile=. main passes os.Environ().
func LoadEnv(environ []string, paths ...string) (*Config, error) {
	vals := make(map[string]string)
	from := make(map[string]Origin)
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("updateconf: open %s: %w", p, err)
		}
		set, err := Parse(p, f)
		f.Close()
		if err != nil {
			return nil, err
		}
		merge(vals, from, set, p)
	}
	env := make(map[string]string)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && envKeys[k] {
			env[k] = v
		}
	}
	merge(vals, from, env, FromEnvironment)
	return fromValues(vals, from)
}

// merge lays set (read from file) over vals, aliases winning over their plain key.
func merge(vals map[string]string, from map[string]Origin, set map[string]string, file string) {
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if _, alias := aliases[k]; !alias {
			vals[k], from[k] = set[k], Origin{File: file, Key: k}
		}
	}
	for alias, k := range aliases {
		if v, ok := set[alias]; ok {
			vals[k], from[k] = v, Origin{File: file, Key: alias}
		}
	}
}

// ValueError is a known key with a value twinslot cannot use.
type ValueError struct {
	Key, Value string
	Origin     Origin // zero when the values did not come from files
	Msg        string
}

func (e *ValueError) Error() string {
	where := ""
	if e.Origin.File != "" {
		where = fmt.Sprintf(" (%s in %s)", e.Origin.Key, e.Origin.File)
	}
	return fmt.Sprintf("updateconf: %s=%q%s: %s", e.Key, e.Value, where, e.Msg)
}

// FromValues builds a Config from raw key/values, applying defaults and validating known keys.
// A LOCKSMITHD_ window key in vals wins over its plain key.
func FromValues(vals map[string]string) (*Config, error) {
	canon, from := make(map[string]string), make(map[string]Origin)
	merge(canon, from, vals, "")
	return fromValues(canon, from)
}

func fromValues(vals map[string]string, from map[string]Origin) (*Config, error) {
	c := &Config{
		Server:             vals["SERVER"],
		Group:              vals["GROUP"],
		MachineAlias:       vals["MACHINE_ALIAS"],
		RebootStrategy:     vals["REBOOT_STRATEGY"],
		RebootWindowStart:  vals["REBOOT_WINDOW_START"],
		RebootWindowLength: vals["REBOOT_WINDOW_LENGTH"],
		RebootWindowTZ:     vals["REBOOT_WINDOW_TZ"],
		DownloadUser:       vals["DOWNLOAD_USER"],
		DownloadPassword:   vals["DOWNLOAD_PASSWORD"],
		Values:             vals,
		Origins:            from,
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.RebootStrategy == "" {
		c.RebootStrategy = StrategyReboot
	}
	switch c.RebootStrategy {
	case StrategyReboot, StrategyEtcdLock, StrategyFleetLock, StrategyOff:
	case "best-effort":
		return nil, &ValueError{Key: "REBOOT_STRATEGY", Value: c.RebootStrategy, Origin: from["REBOOT_STRATEGY"],
			Msg: "best-effort was removed from CoreOS locksmith in 0.6; set REBOOT_STRATEGY=etcd-lock (or reboot) in /etc/twinslot/update.conf"}
	default:
		return nil, &ValueError{Key: "REBOOT_STRATEGY", Value: c.RebootStrategy, Origin: from["REBOOT_STRATEGY"],
			Msg: "not one of reboot, etcd-lock, fleetlock, off"}
	}
	if (c.RebootWindowStart == "") != (c.RebootWindowLength == "") {
		set, v := "REBOOT_WINDOW_START", c.RebootWindowStart
		if v == "" {
			set, v = "REBOOT_WINDOW_LENGTH", c.RebootWindowLength
		}
		return nil, &ValueError{Key: set, Value: v, Origin: from[set],
			Msg: "set both REBOOT_WINDOW_START and REBOOT_WINDOW_LENGTH, or neither"}
	}
	return c, nil
}

// Origin tells where key's effective value came from; ok is false for a default.
func (c *Config) Origin(key string) (o Origin, ok bool) {
	o, ok = c.Origins[key]
	return o, ok
}

// Disabled reports whether update checks are turned off (SERVER=disabled).
func (c *Config) Disabled() bool { return c.Server == ServerDisabled }
