package newc

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// entry is one decoded archive member (the test's own reading of the format).
type entry struct {
	name                 string
	ino, mode, nlink     uint64
	rmajor, rminor, size uint64
	data                 string
}

func decode(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if len(b)-off < headerSize || string(b[off:off+6]) != magic {
			t.Fatalf("no header at offset %d", off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return v
		}
		e := entry{ino: field(0), mode: field(1), nlink: field(4), size: field(6), rmajor: field(9), rminor: field(10)}
		for i, want := range map[int]uint64{2: 0, 3: 0, 5: 0, 7: 0, 8: 0, 12: 0} {
			if field(i) != want {
				t.Fatalf("field %d = %d, want %d", i, field(i), want)
			}
		}
		nameSize := int(field(11))
		name := b[off+headerSize : off+headerSize+nameSize]
		if name[nameSize-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", off)
		}
		e.name = string(name[:nameSize-1])
		off += headerSize + nameSize
		if off%4 != 0 {
			off += 4 - off%4
		}
		e.data = string(b[off : off+int(e.size)])
		off += int(e.size)
		if off%4 != 0 {
			off += 4 - off%4
		}
		if e.name == trailer {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *Writer) error
		want  string
	}{
		{"absolute name", func(w *Writer) error { return w.File("/init", 0o755, nil) }, "not a clean relative path"},
		{"dot-dot", func(w *Writer) error { return w.File("../etc/passwd", 0o644, nil) }, "not a clean relative path"},
		{"unclean", func(w *Writer) error { return w.Dir("a//b", 0o755) }, "not a clean relative path"},
		{"empty", func(w *Writer) error { return w.Dir("", 0o755) }, "empty entry name"},
		{"trailer name", func(w *Writer) error { return w.File(trailer, 0o644, nil) }, "trailer"},
		{"duplicate", func(w *Writer) error { w.File("a", 0o644, nil); return w.File("a", 0o644, nil) }, "duplicate"},
		{"parent is a file", func(w *Writer) error { w.File("a", 0o644, nil); return w.File("a/b", 0o644, nil) }, "not a directory"},
		{"symlink without target", func(w *Writer) error { return w.Symlink("a", "") }, "empty target"},
		{"long name", func(w *Writer) error { return w.File(strings.Repeat("x", MaxNameLen+1), 0o644, nil) }, "more than"},
		{"after close", func(w *Writer) error { w.Close(); return w.Dir("a", 0o755) }, ErrClosed.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.write(NewWriter(&bytes.Buffer{}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	w := NewWriter(failWriter{})
	if err := w.File("a", 0o644, []byte("x")); !errors.Is(err, errDiskFull) {
		t.Fatalf("err = %v, want %v", err, errDiskFull)
	}
}

var errDiskFull = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errDiskFull }

// TestGoldenEntry checks one entry byte for byte against the format as documented.
func TestGoldenEntry(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.File("init", 0o755, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000081ED" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000005" + "00000000" + "00000000" + "00000000" + "00000000" + "00000005" + "00000000" +
		"init\x00" + "\x00" + // 110+5 = 115 → pad to 116
		"hello" + "\x00\x00\x00" + // 5 → 8
		"070701" + "00000000" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000B" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00" // 110+11 = 121 → 124
	if got := buf.String(); got != want {
		t.Fatalf("archive\n got %q\nwant %q", got, want)
	}
}

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	steps := []error{
		w.CharDev("dev/console", 0o600, 5, 1),
		w.Dir("proc", 0o555),
		w.File("lib/modules/00-virtio.ko", 0o644, []byte("module bytes")),
		w.Symlink("sbin/init", "../init"),
		w.File("init", 0o755, bytes.Repeat([]byte{0xEE}, 4099)),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive is %d bytes, not a multiple of 4", buf.Len())
	}
	type want struct {
		name  string
		mode  uint64
		nlink uint64
		rdev  [2]uint64
		data  string
	}
	wants := []want{
		{name: "dev", mode: 0o40755, nlink: 2},
		{name: "dev/console", mode: 0o20600, nlink: 1, rdev: [2]uint64{5, 1}},
		{name: "proc", mode: 0o40555, nlink: 2},
		{name: "lib", mode: 0o40755, nlink: 2},
		{name: "lib/modules", mode: 0o40755, nlink: 2},
		{name: "lib/modules/00-virtio.ko", mode: 0o100644, nlink: 1, data: "module bytes"},
		{name: "sbin", mode: 0o40755, nlink: 2},
		{name: "sbin/init", mode: 0o120777, nlink: 1, data: "../init"},
		{name: "init", mode: 0o100755, nlink: 1, data: string(bytes.Repeat([]byte{0xEE}, 4099))},
	}
	got := decode(t, buf.Bytes())
	if len(got) != len(wants) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(wants), got)
	}
	for i, g := range got {
		w := wants[i]
		if g.name != w.name || g.mode != w.mode || g.nlink != w.nlink || g.rmajor != w.rdev[0] || g.rminor != w.rdev[1] || g.data != w.data || g.ino != uint64(i+1) {
			t.Errorf("entry %d = %s mode %o nlink %d rdev %d,%d ino %d (%d bytes), want %s mode %o nlink %d rdev %v ino %d",
				i, g.name, g.mode, g.nlink, g.rmajor, g.rminor, g.ino, len(g.data), w.name, w.mode, w.nlink, w.rdev, i+1)
		}
	}
}

// TestCPIOReadsIt cross-checks the archive with GNU cpio when it is installed.
func TestCPIOReadsIt(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed (apt-get install cpio); the kernel cross-check is make e2e")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, err := range []error{
		w.File("etc/twinslot/hello", 0o640, []byte("hi\n")),
		w.Symlink("etc/link", "twinslot/hello"),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), cpio, "-i", "-d", "--quiet", "-H", "newc")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "etc/link"))
	if err != nil || string(b) != "hi\n" {
		t.Fatalf("etc/link → %q, %v", b, err)
	}
	st, err := os.Stat(filepath.Join(dir, "etc/twinslot/hello"))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("hello: %v %v", st, err)
	}
}
