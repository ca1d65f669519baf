package qemuboot

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/twinslot/twinslot/testimages/bootinit"
	"github.com/twinslot/twinslot/testimages/qemuboot/newc"
)

// InitPackage is the import path of the boot's init program.
const InitPackage = "github.com/twinslot/twinslot/testimages/cmd/bootinit"

// Module is a kernel module to pack, decompressed.
type Module struct {
	Name string // "virtio_blk"
	Data []byte // the ELF object
}

// WriteInitramfs writes a newc initramfs holding init as /init (the static bootinit
// program), the directories it mounts on, /dev/console, and modules as
// lib/modules/NN-name.ko in load order (bootinit loads them in name order).
func WriteInitramfs(w io.Writer, init []byte, modules []Module) error {
	a := newc.NewWriter(w)
	steps := []func() error{
		func() error { return a.CharDev("dev/console", 0o600, 5, 1) },
		func() error { return a.Dir("proc", 0o555) },
		func() error { return a.Dir("sys", 0o555) },
		func() error { return a.Dir(bootinit.UsrDir, 0o755) },
		func() error { return a.File("init", 0o755, init) },
	}
	for i, m := range modules {
		name := fmt.Sprintf("%s/%02d-%s.ko", bootinit.ModulesDir, i, m.Name)
		if strings.ContainsAny(m.Name, "/\x00") || m.Name == "" {
			return fmt.Errorf("initramfs: bad module name %q", m.Name)
		}
		steps = append(steps, func() error { return a.File(name, 0o644, m.Data) })
	}
	steps = append(steps, a.Close)
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	return nil
}

// KernelModules resolves BootModules against the kernel's module directory and reads the
// files to pack. A kernel without a module directory gets none (everything must be built in;
// the boot says so when the disk never appears).
func KernelModules(k Kernel) ([]Module, error) {
	if k.Modules == "" {
		return nil, nil
	}
	fsys := os.DirFS(k.Modules)
	ix, err := LoadModuleIndex(fsys)
	if err != nil {
		return nil, fmt.Errorf("modules of kernel %s: %w", k.Release, err)
	}
	paths, err := ix.Resolve(BootModules()...)
	if err != nil {
		return nil, fmt.Errorf("modules of kernel %s: %w", k.Release, err)
	}
	out := make([]Module, 0, len(paths))
	for _, p := range paths {
		b, err := ReadModule(fsys, p)
		if err != nil {
			return nil, err
		}
		out = append(out, Module{Name: ModuleName(path.Base(p)), Data: b})
	}
	return out, nil
}

// BuildInit compiles bootinit into out as a static linux/amd64 binary with the go command
// goTool ("go" from PATH when empty).
func BuildInit(ctx context.Context, goTool, out string) error {
	if goTool == "" {
		goTool = "go"
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, InitPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", InitPackage, err, b)
	}
	return nil
}
