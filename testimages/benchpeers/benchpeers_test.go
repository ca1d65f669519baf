package benchpeers

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/testimages"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want int64
	}{{[]int64{5}, 5}, {[]int64{3, 1, 2}, 2}, {[]int64{4, 1, 3, 2}, 2}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestRun runs the whole benchmark on 16 MiB images, one round: every tool's output must match
// the target byte for byte (Run fails otherwise), and the figures must tell a delta from a full
// install.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs casync and zchunk; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "payload")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/twinslot/twinslot/tools/cmd/payload").CombinedOutput(); err != nil {
		t.Fatalf("build payload: %v: %s", err, out)
	}
	r, err := Run(t.Context(), Options{Dir: dir, Size: 16 << 20, Seed: 7, Rounds: 1, Changes: []float64{0.05},
		Kinds: []testimages.ChangeKind{testimages.ChangeEdit}, Payload: bin})
	if errors.Is(err, ErrToolMissing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) != 2 || r.Cases[1].Name != "full" {
		t.Fatalf("cases %+v", r.Cases)
	}
	for _, tool := range Tools {
		d, f := r.Summary("edit-05", tool), r.Summary("full", tool)
		if d.Requests == 0 || d.PeakRSS == 0 || d.Wall <= 0 {
			t.Errorf("%s: empty figures %+v", tool, d)
		}
		if d.Fetched*2 > f.Fetched {
			t.Errorf("%s: a 5%% delta fetched %d bytes, the full install %d", tool, d.Fetched, f.Fetched)
		}
	}
	var out bytes.Buffer
	r.WriteTable(&out)
	if n := strings.Count(out.String(), "\n| "); n != 1+2*len(Tools) {
		t.Errorf("table has %d rows:\n%s", n, out.String())
	}
}

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"odd size", Options{Dir: t.TempDir(), Size: 12345, Payload: "x"}, "multiple of 4096"},
		{"no payload binary", Options{Dir: t.TempDir(), Size: 16 << 20, Payload: filepath.Join(t.TempDir(), "none")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(t.Context(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
