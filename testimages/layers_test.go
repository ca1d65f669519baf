package testimages_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// layers is the order of twinslot's components: a package may import its own component and
// those before it, never one after it, so the import graph reads from the disk up to the tests.
// The foundations import no other component and may be imported by any: partition (disks,
// slots, durable files), omaha's wire package (the protocol every side speaks: app ids, error
// codes) and the command-line frame every program shares (tools/cli, tools/progress).
var layers = []string{"partition", "payload", "omaha", "updated", "locksmith", "tools", "testimages"}

var foundations = []string{"partition", "omaha", "tools/cli", "tools/progress"}

const module = "github.com/twinslot/twinslot/"

// rank is the place of a package (a path relative to the module) in the order; foundations are 0.
func rank(pkg string) int {
	for _, f := range foundations {
		if pkg == f || (f == "partition" && strings.HasPrefix(pkg, "partition/")) {
			return 0
		}
	}
	comp, _, _ := strings.Cut(pkg, "/")
	for i, l := range layers {
		if l == comp {
			return i + 1
		}
	}
	return -1
}

// TestLayers reads the imports of every non-test Go file in the repository and fails on an
// import that goes up the order (a test may import what it likes: test helpers live above).
func TestLayers(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "testdata", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		r := rank(pkg)
		if r < 0 {
			t.Errorf("%s: package %s is in no component of the layer order %v", path, pkg, layers)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			dep, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			same := r > 0 && strings.SplitN(dep, "/", 2)[0] == strings.SplitN(pkg, "/", 2)[0]
			if rd := rank(dep); !same && rd > r {
				t.Errorf("%s imports %s: %s comes after %s in the layer order %v (foundations %v); move the shared code down or invert the dependency",
					strings.TrimPrefix(path, root+string(os.PathSeparator)), dep, dep, pkg, layers, foundations)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("read only %d Go files under %s: wrong root?", checked, root)
	}
}
