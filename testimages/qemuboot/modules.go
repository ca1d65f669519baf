package qemuboot

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Limits on what is read from the host's module directory.
const (
	MaxIndexFile  = 32 << 20 // modules.dep, modules.builtin, modules.alias, modules.softdep
	MaxModuleSize = 64 << 20 // one module, decompressed
	maxDepth      = 64       // dependency chain length
)

// ErrNoModule: a module the boot needs is neither built into the kernel nor in modules.dep.
var ErrNoModule = errors.New("kernel module not found")

// BootModules names the drivers the boot needs for a virtio disk holding ext4: each is either
// built into the kernel (modules.builtin) or loaded from the initramfs with its dependencies.
func BootModules() []string { return []string{"virtio_pci", "virtio_blk", "ext4"} }

// ModuleIndex is what depmod wrote into lib/modules/RELEASE: which modules are built in,
// where each module file is and what it depends on.
type ModuleIndex struct {
	paths   map[string]string   // module name → path relative to the module directory
	deps    map[string][]string // path → paths it needs (modules.dep)
	builtin map[string]bool     // module name → built into the kernel
	softPre map[string][]string // module name → names to load before it (modules.softdep "pre:")
	alias   map[string]string   // exact alias → module name (modules.alias)
}

// ModuleName is the kernel's name of a module file: "kernel/fs/ext4/ext4.ko.xz" → "ext4",
// with '-' and '_' equivalent (as the kernel treats them).
func ModuleName(p string) string {
	n := path.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		n = strings.TrimSuffix(n, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(n, ".ko"), "-", "_")
}

// LoadModuleIndex reads modules.dep (required) and modules.builtin, modules.softdep and
// modules.alias (each optional) from fsys, the host's lib/modules/RELEASE.
func LoadModuleIndex(fsys fs.FS) (*ModuleIndex, error) {
	dep, err := readIndex(fsys, "modules.dep")
	if err != nil {
		return nil, err
	}
	ix := &ModuleIndex{builtin: map[string]bool{}, softPre: map[string][]string{}, alias: map[string]string{}}
	if ix.deps, err = ParseModulesDep(dep); err != nil {
		return nil, err
	}
	ix.paths = make(map[string]string, len(ix.deps))
	for p := range ix.deps {
		ix.paths[ModuleName(p)] = p
	}
	if b, err := readIndex(fsys, "modules.builtin"); err == nil {
		for line := range strings.Lines(string(b)) {
			if line = strings.TrimSpace(line); line != "" {
				ix.builtin[ModuleName(line)] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := readIndex(fsys, "modules.softdep"); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "softdep" {
				continue
			}
			pre := false
			for _, w := range f[2:] {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						n := ModuleName(f[1])
						ix.softPre[n] = append(ix.softPre[n], w)
					}
				}
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := readIndex(fsys, "modules.alias"); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "alias" && !strings.ContainsAny(f[1], "*?[") {
				if _, dup := ix.alias[f[1]]; !dup {
					ix.alias[f[1]] = ModuleName(f[2])
				}
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return ix, nil
}

func readIndex(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxIndexFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > MaxIndexFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, MaxIndexFile)
	}
	return b, nil
}

// ParseModulesDep parses depmod's modules.dep: "path: dep-path dep-path…" per line.
func ParseModulesDep(b []byte) (map[string][]string, error) {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), MaxIndexFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, deps, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(mod) == "" {
			return nil, fmt.Errorf("modules.dep line %d: %.80q is not \"module: deps\"", n, line)
		}
		mod = strings.TrimSpace(mod)
		for _, p := range append([]string{mod}, strings.Fields(deps)...) {
			if !fs.ValidPath(p) || !strings.Contains(path.Base(p), ".ko") {
				return nil, fmt.Errorf("modules.dep line %d: %.80q is not a relative module path", n, p)
			}
		}
		out[mod] = strings.Fields(deps)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("modules.dep: %w", err)
	}
	return out, nil
}

// Resolve returns the module files (paths relative to the module directory) to load for
// names, dependencies first, each once; built-in modules are left out. Soft dependencies
// ("pre:") are loaded first when they can be found and silently left out when not, as
// modprobe does.
func (ix *ModuleIndex) Resolve(names ...string) ([]string, error) {
	var order []string
	done := map[string]bool{}
	var visitPath func(p string, depth int) error
	visitName := func(name string, soft bool, depth int) error {
		name = strings.ReplaceAll(name, "-", "_")
		if ix.builtin[name] {
			return nil
		}
		p, ok := ix.paths[name]
		if !ok {
			if a, isAlias := ix.alias[name]; isAlias {
				if ix.builtin[a] {
					return nil
				}
				p, ok = ix.paths[a]
			}
		}
		if !ok {
			if soft {
				return nil
			}
			return fmt.Errorf("%w: %s is neither built into the kernel nor listed in modules.dep", ErrNoModule, name)
		}
		return visitPath(p, depth)
	}
	visitPath = func(p string, depth int) error {
		if done[p] {
			return nil
		}
		if depth > maxDepth {
			return fmt.Errorf("module %s: dependency chain longer than %d (a cycle in modules.dep?)", p, maxDepth)
		}
		for _, s := range ix.softPre[ModuleName(p)] {
			if err := visitName(s, true, depth+1); err != nil {
				return err
			}
		}
		for _, d := range ix.deps[p] {
			if _, ok := ix.deps[d]; !ok {
				return fmt.Errorf("%w: %s needs %s, which modules.dep does not list", ErrNoModule, p, d)
			}
			if err := visitPath(d, depth+1); err != nil {
				return err
			}
		}
		if !done[p] {
			done[p] = true
			order = append(order, p)
		}
		return nil
	}
	for _, n := range names {
		if err := visitName(n, false, 0); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ReadModule reads a module file from fsys and decompresses it when it ends in .xz, .zst or
// .gz, since the boot loads modules with a plain finit_module.
func ReadModule(fsys fs.FS, p string) ([]byte, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	switch path.Ext(p) {
	case ".xz":
		if r, err = xz.NewReader(f); err != nil {
			return nil, fmt.Errorf("read module %s: xz: %w", p, err)
		}
	case ".zst":
		d, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxModuleSize))
		if err != nil {
			return nil, fmt.Errorf("read module %s: zstd: %w", p, err)
		}
		defer d.Close()
		r = d
	case ".gz":
		g, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("read module %s: gzip: %w", p, err)
		}
		defer g.Close()
		r = g
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", p, err)
	}
	if len(b) > MaxModuleSize {
		return nil, fmt.Errorf("read module %s: more than %d bytes decompressed", p, MaxModuleSize)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return nil, fmt.Errorf("read module %s: not an ELF object", p)
	}
	return b, nil
}
