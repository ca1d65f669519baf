package testimages

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkBuildUsr measures building fresh /usr images of benchmark sizes, and a new
// build of 1 GiB from a base with 5% of the files changed. Run with -benchtime 1x.
func BenchmarkBuildUsr(b *testing.B) {
	dir := b.TempDir()
	for _, size := range []int64{128 * MiB, 1 * GiB, 2 * GiB} {
		b.Run(fmt.Sprintf("fresh-%dMiB", size/MiB), func(b *testing.B) {
			p := filepath.Join(dir, "usr.img")
			b.SetBytes(size)
			for b.Loop() {
				if err := BuildUsr(b.Context(), p, UsrOptions{Version: "1.0.0", Size: size}); err != nil {
					b.Fatal(err)
				}
			}
			os.Remove(p)
		})
	}
	b.Run("derived-1024MiB-5%", func(b *testing.B) {
		base := filepath.Join(dir, "base.img")
		if err := BuildUsr(b.Context(), base, UsrOptions{Version: "1.0.0", Size: GiB}); err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(dir, "new.img")
		b.SetBytes(GiB)
		b.ResetTimer()
		for b.Loop() {
			if err := BuildUsr(b.Context(), p, UsrOptions{Version: "1.0.1", Base: base, Change: 0.05}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
