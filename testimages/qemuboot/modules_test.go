package qemuboot

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestModuleName(t *testing.T) {
	for p, want := range map[string]string{
		"kernel/fs/ext4/ext4.ko":                  "ext4",
		"kernel/arch/x86/crypto/crc32c-intel.ko":  "crc32c_intel",
		"kernel/drivers/block/virtio_blk.ko.xz":   "virtio_blk",
		"kernel/drivers/virtio/virtio_pci.ko.zst": "virtio_pci",
		"kernel/lib/crc16.ko.gz":                  "crc16",
		"crc32c-generic":                          "crc32c_generic",
	} {
		if got := ModuleName(p); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestParseModulesDepErrors(t *testing.T) {
	for name, in := range map[string]string{
		"no colon":      "kernel/fs/ext4/ext4.ko\n",
		"empty module":  ": kernel/lib/crc16.ko\n",
		"absolute path": "/lib/modules/x/ext4.ko:\n",
		"dot-dot dep":   "kernel/fs/ext4/ext4.ko: ../../../etc/passwd.ko\n",
		"not a module":  "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.o\n",
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := ParseModulesDep([]byte(in)); err == nil {
				t.Fatalf("parsed %q as %v", in, got)
			}
		})
	}
}

// TestResolveDebianCloud resolves the boot's modules against an excerpt of the index of the
// kernel make e2e boots (testdata/README.md): ext4 is built in, virtio is not.
func TestResolveDebianCloud(t *testing.T) {
	ix, err := LoadModuleIndex(os.DirFS("testdata/modules-6.1.0-56-cloud-amd64"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ix.Resolve(BootModules()...)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
		"kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/virtio/virtio_pci.ko",
		"kernel/drivers/block/virtio_blk.ko",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resolved\n %v\nwant\n %v", got, want)
	}
}

// generic is a kernel index where ext4 is a module with dependencies and a soft dependency
// reached through an alias, with xz-compressed files (as Debian's generic kernels ship).
func generic() fstest.MapFS {
	return fstest.MapFS{
		"modules.dep": {Data: []byte(`kernel/fs/ext4/ext4.ko.xz: kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/lib/crc16.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz:
kernel/drivers/md/dm-mod.ko.xz: kernel/drivers/md/dm-bufio.ko.xz
`)},
		"modules.builtin": {Data: []byte("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n")},
		"modules.softdep": {Data: []byte("# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c post: nosuchmodule\nsoftdep virtio_blk pre: nosuchmodule\n")},
		"modules.alias":   {Data: []byte("alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias virtio:d00000002v* virtio_blk\n")},
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		fsys    fstest.MapFS
		modules []string
		want    string
		wantErr error
	}{
		{name: "unknown module", fsys: generic(), modules: []string{"nosuchdriver"}, wantErr: ErrNoModule},
		{name: "dependency missing from modules.dep", fsys: generic(), modules: []string{"dm-mod"}, wantErr: ErrNoModule},
		{name: "cycle", fsys: fstest.MapFS{"modules.dep": {Data: []byte("a.ko: b.ko\nb.ko: a.ko\n")}}, modules: []string{"a"}},
		{
			name:    "generic kernel",
			fsys:    generic(),
			modules: BootModules(),
			want: "[kernel/drivers/virtio/virtio_pci.ko.xz kernel/drivers/block/virtio_blk.ko.xz kernel/crypto/crc32c_generic.ko.xz " +
				"kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz kernel/fs/jbd2/jbd2.ko.xz kernel/fs/ext4/ext4.ko.xz]",
		},
		{name: "each once", fsys: generic(), modules: []string{"jbd2", "ext4", "jbd2"},
			want: "[kernel/fs/jbd2/jbd2.ko.xz kernel/crypto/crc32c_generic.ko.xz kernel/fs/mbcache.ko.xz kernel/lib/crc16.ko.xz kernel/fs/ext4/ext4.ko.xz]"},
		{name: "all built in", fsys: generic(), modules: []string{"virtio", "virtio-ring"}, want: "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix, err := LoadModuleIndex(tt.fsys)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ix.Resolve(tt.modules...)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want %v", got, err, tt.wantErr)
				}
			case tt.want == "":
				if err == nil || !strings.Contains(err.Error(), "cycle") {
					t.Fatalf("got %v, %v; want a cycle error", got, err)
				}
			case err != nil || fmt.Sprint(got) != tt.want:
				t.Fatalf("got %v, %v\nwant %s", got, err, tt.want)
			}
		})
	}
}

func TestLoadModuleIndexErrors(t *testing.T) {
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{name: "no modules.dep", fsys: fstest.MapFS{"modules.builtin": {Data: nil}}, want: "modules.dep"},
		{name: "bad modules.dep", fsys: fstest.MapFS{"modules.dep": {Data: []byte("garbage\n")}}, want: "is not \"module: deps\""},
		{name: "modules.dep too large", fsys: fstest.MapFS{"modules.dep": {Data: make([]byte, MaxIndexFile+1)}}, want: "larger than"},
		{name: "builtin unreadable", fsys: fstest.MapFS{"modules.dep": {Data: nil}, "modules.builtin": {Mode: fs.ModeDir}}, want: "modules.builtin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LoadModuleIndex(tt.fsys); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestReadModule(t *testing.T) {
	elf := append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte("module text "), 1000)...)
	compress := map[string]func(t *testing.T) []byte{
		".ko": func(t *testing.T) []byte { return elf },
		".ko.xz": func(t *testing.T) []byte {
			var b bytes.Buffer
			w, err := xz.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(elf)
			w.Close()
			return b.Bytes()
		},
		".ko.zst": func(t *testing.T) []byte {
			e, err := zstd.NewWriter(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			return e.EncodeAll(elf, nil)
		},
		".ko.gz": func(t *testing.T) []byte {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(elf)
			w.Close()
			return b.Bytes()
		},
	}
	for ext, c := range compress {
		t.Run(ext, func(t *testing.T) {
			fsys := fstest.MapFS{"m" + ext: {Data: c(t)}}
			got, err := ReadModule(fsys, "m"+ext)
			if err != nil || !bytes.Equal(got, elf) {
				t.Fatalf("got %d bytes, %v", len(got), err)
			}
		})
	}
	for name, tt := range map[string]struct {
		file string
		data []byte
		want string
	}{
		"missing":     {file: "other.ko", data: elf, want: "file does not exist"},
		"not ELF":     {file: "m.ko", data: []byte("#!/bin/sh"), want: "not an ELF object"},
		"corrupt xz":  {file: "m.ko.xz", data: []byte("not xz at all"), want: "xz"},
		"corrupt zst": {file: "m.ko.zst", data: []byte("not zstd at all"), want: "m.ko.zst"},
		"corrupt gz":  {file: "m.ko.gz", data: []byte("not gzip"), want: "gzip"},
		"too large":   {file: "m.ko", data: append(elf, make([]byte, MaxModuleSize)...), want: "more than"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadModule(fstest.MapFS{tt.file: {Data: tt.data}}, "m.ko"+strings.TrimPrefix(tt.file, "m.ko")); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func FuzzParseModulesDep(f *testing.F) {
	b, err := os.ReadFile("testdata/modules-6.1.0-56-cloud-amd64/modules.dep")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(generic()["modules.dep"].Data))
	f.Fuzz(func(t *testing.T, b []byte) {
		deps, err := ParseModulesDep(b)
		if err != nil {
			return
		}
		for m, ds := range deps {
			for _, p := range append([]string{m}, ds...) {
				if !fs.ValidPath(p) {
					t.Fatalf("accepted path %q", p)
				}
			}
		}
		ix := &ModuleIndex{deps: deps, paths: map[string]string{}}
		for p := range deps {
			ix.paths[ModuleName(p)] = p
		}
		for p := range deps {
			ix.Resolve(ModuleName(p)) // must not loop or panic
		}
	})
}
