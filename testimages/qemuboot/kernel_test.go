package qemuboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bzImage returns the start of an x86 bzImage whose setup header points at version.
func bzImage(version string) []byte {
	b := make([]byte, 0x400+len(version)+1)
	binary.LittleEndian.PutUint16(b[bootFlagOff:], 0xAA55)
	copy(b[headerMagOff:], "HdrS")
	binary.LittleEndian.PutUint16(b[kernelVerOff:], 0x200) // string at 0x400
	copy(b[0x400:], version)
	return b
}

func TestKernelRelease(t *testing.T) {
	tests := []struct {
		name    string
		image   []byte
		want    string
		wantErr string
	}{
		{name: "too short", image: []byte("MZ"), wantErr: "read setup header"},
		{name: "no boot flag", image: make([]byte, 0x400), wantErr: "no boot flag"},
		{name: "no version pointer", image: func() []byte {
			b := bzImage("x")
			binary.LittleEndian.PutUint16(b[kernelVerOff:], 0)
			return b
		}(), wantErr: "no kernel version string"},
		{name: "pointer past the end", image: func() []byte {
			b := bzImage("x")
			binary.LittleEndian.PutUint16(b[kernelVerOff:], 0xF000)
			return b
		}(), wantErr: "read bzImage version string"},
		{name: "release with a slash", image: bzImage("../../etc #1"), wantErr: "has no release"},
		{name: "release dot-dot", image: bzImage(".. #1"), wantErr: "has no release"},
		{name: "empty release", image: bzImage(" #1 SMP"), wantErr: "has no release"},
		{name: "debian", image: bzImage("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1"), want: "6.1.0-56-cloud-amd64"},
		{name: "bare", image: bzImage("6.12.0"), want: "6.12.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KernelRelease(bytes.NewReader(tt.image))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestKernelReleaseInstalled cross-checks the header against the installed kernels' names.
func TestKernelReleaseInstalled(t *testing.T) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Skip("no /boot/vmlinuz-* installed (apt-get install linux-image-cloud-amd64)")
	}
	for _, k := range kernels {
		f, err := os.Open(k)
		if err != nil {
			t.Skipf("cannot read %s: %v", k, err)
		}
		got, err := KernelRelease(f)
		f.Close()
		if want := strings.TrimPrefix(filepath.Base(k), "vmlinuz-"); err != nil || got != want {
			t.Errorf("%s: release %q, %v; want %q", k, got, err, want)
		}
	}
}

func TestFindKernel(t *testing.T) {
	write := func(t *testing.T, root, p string, b []byte) {
		t.Helper()
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(t *testing.T, root, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		setup    func(t *testing.T, root string)
		explicit string
		want     Kernel // paths relative to root
		wantErr  string
	}{
		{name: "nothing installed", setup: func(t *testing.T, root string) {}, wantErr: ErrNoKernel.Error()},
		{name: "explicit does not exist", setup: func(t *testing.T, root string) { write(t, root, "boot/vmlinuz-6.1.0", bzImage("6.1.0")) },
			explicit: "/nonexistent/bzImage", wantErr: "set TWINSLOT_KERNEL"},
		{name: "explicit is not a kernel", setup: func(t *testing.T, root string) { write(t, root, "k", []byte("not a kernel")) },
			explicit: "k", wantErr: "not a bzImage"},
		{
			name: "newest in boot, with modules",
			setup: func(t *testing.T, root string) {
				write(t, root, "boot/vmlinuz-6.1.0-55-cloud-amd64", bzImage("6.1.0-55-cloud-amd64 #1"))
				write(t, root, "boot/vmlinuz-6.1.0-56-cloud-amd64", bzImage("6.1.0-56-cloud-amd64 #1"))
				mkdir(t, root, "lib/modules/6.1.0-56-cloud-amd64")
			},
			want: Kernel{Path: "boot/vmlinuz-6.1.0-56-cloud-amd64", Release: "6.1.0-56-cloud-amd64", Modules: "lib/modules/6.1.0-56-cloud-amd64"},
		},
		{
			name: "release from the file name when the header has none",
			setup: func(t *testing.T, root string) {
				write(t, root, "boot/vmlinuz-6.9.0-custom", make([]byte, 0x400))
			},
			want: Kernel{Path: "boot/vmlinuz-6.9.0-custom", Release: "6.9.0-custom"},
		},
		{
			name: "Debian's /vmlinuz symlink",
			setup: func(t *testing.T, root string) {
				write(t, root, "srv/kernel", bzImage("6.1.0-9-amd64 #1"))
				if err := os.Symlink("srv/kernel", filepath.Join(root, "vmlinuz")); err != nil {
					t.Fatal(err)
				}
				mkdir(t, root, "lib/modules/6.1.0-9-amd64")
			},
			want: Kernel{Path: "vmlinuz", Release: "6.1.0-9-amd64", Modules: "lib/modules/6.1.0-9-amd64"},
		},
		{
			name: "Fedora layout",
			setup: func(t *testing.T, root string) {
				write(t, root, "lib/modules/6.8.5-301.fc40.x86_64/vmlinuz", bzImage("6.8.5-301.fc40.x86_64 (mockbuild@) #1"))
			},
			want: Kernel{Path: "lib/modules/6.8.5-301.fc40.x86_64/vmlinuz", Release: "6.8.5-301.fc40.x86_64", Modules: "lib/modules/6.8.5-301.fc40.x86_64"},
		},
		{
			name: "explicit wins",
			setup: func(t *testing.T, root string) {
				write(t, root, "boot/vmlinuz-6.1.0", bzImage("6.1.0"))
				write(t, root, "home/me/bzImage", bzImage("6.15.0-rc1 #3"))
			},
			explicit: "home/me/bzImage",
			want:     Kernel{Path: "home/me/bzImage", Release: "6.15.0-rc1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tt.setup(t, root)
			explicit := tt.explicit
			if explicit != "" && !filepath.IsAbs(explicit) {
				explicit = filepath.Join(root, explicit)
			}
			got, err := FindKernel(root, explicit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tt.wantErr)
				}
				if !errors.Is(err, ErrNoKernel) {
					t.Fatalf("err %v is not ErrNoKernel", err)
				}
				return
			}
			want := tt.want
			want.Path = filepath.Join(root, want.Path)
			if want.Modules != "" {
				want.Modules = filepath.Join(root, want.Modules)
			}
			if err != nil || got != want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, want)
			}
		})
	}
}
