package testimages

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/partition/esp"
)

func TestBuildUsr(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img"), filepath.Join(dir, "c.img")
	o := UsrOptions{Version: "1.0.0", Size: 16 * MiB}
	var calls int
	var last [2]int64
	o.Progress = func(done, total int64) { calls++; last = [2]int64{done, total} }
	buildUsrT(t, a, o)
	if calls == 0 || last[0] != last[1] || last[1] < 10*MiB {
		t.Fatalf("progress: %d calls, last %v", calls, last)
	}
	o.Progress = nil
	buildUsrT(t, b, o)
	if hashFile(t, a) != hashFile(t, b) {
		t.Fatal("two builds of the same options differ")
	}
	buildUsrT(t, c, UsrOptions{Version: "1.0.1", Size: 16 * MiB})
	if hashFile(t, a) == hashFile(t, c) {
		t.Fatal("different versions built the same image")
	}
	st, err := os.Stat(a)
	if err != nil || st.Size() != 16*MiB {
		t.Fatalf("size %v %v", st.Size(), err)
	}
	rel, err := ReadReleaseFile(a)
	if err != nil || rel != (Release{ID: "twinslot", Version: "1.0.0", Board: "amd64-usr"}) {
		t.Fatalf("release %+v %v", rel, err)
	}
	tree := treeOf(t, a)
	if len(tree) < 50 {
		t.Fatalf("only %d files", len(tree))
	}
	e2fsck(t, a)
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

func TestBuildUsrBoard(t *testing.T) {
	p := filepath.Join(t.TempDir(), "arm.img")
	buildUsrT(t, p, UsrOptions{Version: "2.0.0", Board: "arm64-usr", Size: MinUsrSize, Broken: true})
	rel, err := ReadReleaseFile(p)
	if err != nil || rel != (Release{ID: "twinslot", Version: "2.0.0", Board: "arm64-usr", Broken: true}) {
		t.Fatalf("release %+v %v", rel, err)
	}
}

// TestBuildUsrDerived: a build from a base changes about the asked fraction of files, keeps
// the rest byte-identical, and is itself reproducible.
func TestBuildUsrDerived(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	buildUsrT(t, base, UsrOptions{Version: "1.0.0", Size: 32 * MiB})
	baseTree := treeOf(t, base)
	for _, change := range []float64{0, 0.05, 0.3} {
		p := filepath.Join(dir, "new.img")
		buildUsrT(t, p, UsrOptions{Version: "1.0.1", Base: base, Change: change})
		again := filepath.Join(dir, "again.img")
		buildUsrT(t, again, UsrOptions{Version: "1.0.1", Base: base, Change: change})
		if hashFile(t, p) != hashFile(t, again) {
			t.Fatalf("change %v: not reproducible", change)
		}
		tree := treeOf(t, p)
		var changed, removed, added int
		for f, h := range baseTree {
			switch nh, ok := tree[f]; {
			case f == ReleasePath:
			case !ok:
				removed++
			case nh != h:
				changed++
			}
		}
		for f := range tree {
			if _, ok := baseTree[f]; !ok {
				added++
			}
		}
		n := float64(len(baseTree) - 1)
		frac := float64(changed+removed) / n
		t.Logf("change %v: %d files, %d changed, %d removed, %d added (%.3f)", change, len(baseTree), changed, removed, added, frac)
		if math.Abs(frac-change) > 0.05+change/3 {
			t.Errorf("change %v: %.3f of the files differ", change, frac)
		}
		if change == 0 && (changed+removed+added != 0 || tree[ReleasePath] == baseTree[ReleasePath]) {
			t.Errorf("change 0 changed files or kept the old os-release")
		}
		if change >= 0.3 && (removed == 0 || added == 0) {
			t.Errorf("change %v: no removed or added files", change)
		}
		if rel, err := ReadReleaseFile(p); err != nil || rel.Version != "1.0.1" {
			t.Fatalf("release %+v %v", rel, err)
		}
		e2fsck(t, p)
	}
}

func TestBuildUsrErrors(t *testing.T) {
	dir := t.TempDir()
	notImage := filepath.Join(dir, "zeros.img")
	if err := os.WriteFile(notImage, make([]byte, MinUsrSize), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.img")
	buildUsrT(t, big, UsrOptions{Version: "1.0.0", Size: 32 * MiB})
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		o       UsrOptions
		wantErr string
		want    error
	}{
		{name: "no version", o: UsrOptions{}, wantErr: "version is empty"},
		{name: "version with a space", o: UsrOptions{Version: "1.0 beta"}, wantErr: "may only hold"},
		{name: "version with a newline", o: UsrOptions{Version: "1.0\nID=evil"}, wantErr: "may only hold"},
		{name: "bad board", o: UsrOptions{Version: "1", Board: "../x"}, wantErr: "may only hold"},
		{name: "too small", o: UsrOptions{Version: "1", Size: MiB}, wantErr: "at least"},
		{name: "unaligned", o: UsrOptions{Version: "1", Size: 8*MiB + 1}, wantErr: "multiple of 4096"},
		{name: "change without base", o: UsrOptions{Version: "1", Change: 0.1}, wantErr: "needs a base"},
		{name: "change above 1", o: UsrOptions{Version: "1", Base: big, Change: 1.5}, wantErr: "outside 0..1"},
		{name: "missing base", o: UsrOptions{Version: "1", Base: filepath.Join(dir, "nope")}, want: os.ErrNotExist},
		{name: "base is not an image", o: UsrOptions{Version: "1", Base: notImage}, want: ErrNoRelease},
		{name: "base does not fit", o: UsrOptions{Version: "1", Base: big, Size: MinUsrSize}, wantErr: "does not fit"},
		{name: "canceled", ctx: canceled, o: UsrOptions{Version: "1", Size: MinUsrSize}, want: context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			out := filepath.Join(dir, "out.img")
			err := BuildUsr(ctx, out, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err = %v, want %q / %v", err, tc.wantErr, tc.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("output left behind: %v", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 2 {
				t.Fatalf("temporary files left: %v", ents)
			}
		})
	}
}

// TestGolden pins the bytes of a small image: the generator, go-diskfs and the
// normalisation together must keep producing them, or payloads built from older images
// would stop matching. Update testdata/golden.sha256 with -update (see testdata/README.md).
func TestGolden(t *testing.T) {
	p := filepath.Join(t.TempDir(), "golden.img")
	buildUsrT(t, p, UsrOptions{Version: "1.0.0", Size: MinUsrSize})
	got := hashFile(t, p) + "  usr-1.0.0-amd64-usr-8MiB.img\n"
	golden := filepath.Join("testdata", "golden.sha256")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("image bytes changed:\n got  %s want %s", got, want)
	}
}

// TestBuildUsrKernel: Kernel and Initrd land at boot/vmlinuz and boot/initrd.img, where
// partition/esp reads them byte for byte; a derived build without them has neither.
func TestBuildUsrKernel(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := make([]byte, 1<<20+5), make([]byte, 300<<10)
	for i := range kernel {
		kernel[i] = byte(i * 7 / 4096) // runs, and zero blocks
	}
	for i := range initrd {
		initrd[i] = byte(i % 251)
	}
	p := filepath.Join(dir, "k.img")
	buildUsrT(t, p, UsrOptions{Version: "1.0.0", Size: MinUsrSize, Kernel: kernel, Initrd: initrd})
	e2fsck(t, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	k, i, err := esp.FromSlot(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s    esp.Source
		want []byte
	}{{k, kernel}, {i, initrd}} {
		got, err := io.ReadAll(io.NewSectionReader(c.s.R, 0, c.s.Size))
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("%s: %d bytes read (%v), differs from what was built in", c.s.Name, len(got), err)
		}
	}
	for _, tc := range []struct {
		name   string
		kernel []byte
		want   error
	}{{"without", nil, esp.ErrNoKernel}, {"with", kernel, nil}} {
		d := filepath.Join(dir, tc.name+".img")
		o := UsrOptions{Version: "1.0.1", Base: p, Change: 0.1, Kernel: tc.kernel}
		if tc.kernel != nil {
			o.Initrd = initrd
		}
		buildUsrT(t, d, o)
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := esp.FromSlot(bytes.NewReader(b), int64(len(b))); !errors.Is(err, tc.want) {
			t.Fatalf("derived %s kernel: FromSlot = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestBuildUsrRewrite: with ChangeRewrite the changed files keep their size and none is
// removed; the other kind of change, so the benchmarks can tell the two apart.
func TestBuildUsrRewrite(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	buildUsrT(t, base, UsrOptions{Version: "1.0.0", Size: 32 * MiB})
	p := filepath.Join(dir, "new.img")
	buildUsrT(t, p, UsrOptions{Version: "1.0.1", Base: base, Change: 0.2, ChangeKind: ChangeRewrite})
	baseTree, tree := treeOf(t, base), treeOf(t, p)
	changed := 0
	for f, h := range baseTree {
		nh, ok := tree[f]
		if !ok {
			t.Fatalf("%s removed by a rewrite", f)
		}
		if nh != h && f != ReleasePath {
			changed++
		}
	}
	frac := float64(changed) / float64(len(baseTree)-1)
	if math.Abs(frac-0.2) > 0.05+0.2/3 {
		t.Errorf("%.3f of the files differ, want about 0.2", frac)
	}
	e2fsck(t, p)
	if err := BuildUsr(t.Context(), filepath.Join(dir, "x.img"), UsrOptions{Version: "1", Base: base, Change: 0.1, ChangeKind: "typo"}); err == nil {
		t.Fatal("unknown change kind accepted")
	}
}
