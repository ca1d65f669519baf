package updatectl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// ConfigReport is the output of `updatectl config --json`.
type ConfigReport struct {
	// Files are the update.conf files in the order they are read; a later one wins key by key.
	Files  []ConfigFile  `json:"files"`
	Values []ConfigValue `json:"values"`
}

// ConfigFile is one file of the search path.
type ConfigFile struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
}

// ConfigValue is one key's effective value and where it came from.
type ConfigValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// File set the value ("" when it is the default); SetAs is the key as written there
	// (LOCKSMITHD_REBOOT_WINDOW_START for REBOOT_WINDOW_START).
	File  string `json:"file,omitempty"`
	SetAs string `json:"set_as,omitempty"`
	// Default: no file sets the key; Value is what updated and locksmithd use then.
	Default bool `json:"default,omitempty"`
}

// knownKeys are shown even when unset, with the default the agent and locksmithd use.
var knownKeys = []struct{ key, def string }{
	{"SERVER", ""}, {"GROUP", updateconf.DefaultGroup}, {"MACHINE_ALIAS", ""},
	{"REBOOT_STRATEGY", updateconf.StrategyReboot}, {"REBOOT_WINDOW_START", ""}, {"REBOOT_WINDOW_LENGTH", ""},
	{"REBOOT_WINDOW_TZ", ""}, {"DOWNLOAD_USER", ""}, {"DOWNLOAD_PASSWORD", ""},
	{updated.ConfHealthURLs, ""}, {updated.ConfHealthTimeout, "5m"}, {updated.ConfEnrollmentToken, ""},
}

// secretKeys are shown as "(set)", never their value.
var secretKeys = map[string]bool{"DOWNLOAD_PASSWORD": true, updated.ConfEnrollmentToken: true}

func (env Env) runConfig(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl config", "[--json] [--root DIR | --config FILE]", `
Show the effective update.conf values and the file each came from. updated and locksmithd read
/usr/share/twinslot/update.conf, /etc/coreos/update.conf, /etc/flatcar/update.conf and
/etc/twinslot/update.conf in this order, a later file winning key by key, so a Flatcar host's
settings keep working and twinslot's file overrides them. Values set in a unit's Environment=
win over every file and are not shown here.`)
	asJSON := fs.Bool("json", false, "print JSON")
	root := fs.String("root", "/", "read the files below `DIR` (a host image mounted elsewhere)")
	config := fs.String("config", "", "read only this `FILE` (as updated --config)")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	paths := []string{*config}
	if *config == "" {
		paths = nil
		for _, p := range updateconf.DefaultPaths() {
			paths = append(paths, filepath.Join(*root, p))
		}
	}
	rep, err := configReport(paths)
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, rep)
	}
	fmt.Fprintln(stdio.Stdout, "Files (a later one wins key by key):")
	for _, f := range rep.Files {
		state := "missing"
		if f.Present {
			state = "read"
		}
		fmt.Fprintf(stdio.Stdout, "  %s (%s)\n", f.Path, state)
	}
	fmt.Fprintln(stdio.Stdout)
	tw := cli.Table(stdio.Stdout)
	fmt.Fprintln(tw, "KEY\tVALUE\tFROM")
	for _, v := range rep.Values {
		val, from := v.Value, v.File
		if val == "" {
			val = "-"
		}
		switch {
		case v.Default && v.Value == "":
			from = "(not set)"
		case v.Default:
			from = "(default)"
		case v.SetAs != v.Key:
			from += " (as " + v.SetAs + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Key, val, from)
	}
	return tw.Flush()
}

// configReport loads paths as updated does and says where each value came from.
func configReport(paths []string) (ConfigReport, error) {
	c, err := updateconf.Load(paths...)
	if err != nil {
		return ConfigReport{}, err
	}
	var rep ConfigReport
	for _, p := range paths {
		_, err := os.Stat(p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("updatectl: %w", err)
		}
		rep.Files = append(rep.Files, ConfigFile{Path: p, Present: err == nil})
	}
	value := func(key, def string) ConfigValue {
		v := ConfigValue{Key: key, Value: def, Default: true}
		if o, ok := c.Origin(key); ok {
			v = ConfigValue{Key: key, Value: c.Values[key], File: o.File, SetAs: o.Key}
		}
		if secretKeys[key] && v.Value != "" {
			v.Value = "(set)"
		}
		return v
	}
	var known []string
	for _, k := range knownKeys {
		rep.Values = append(rep.Values, value(k.key, k.def))
		known = append(known, k.key)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Values)) {
		if !slices.Contains(known, k) {
			rep.Values = append(rep.Values, value(k, ""))
		}
	}
	return rep, nil
}
