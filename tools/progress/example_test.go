package progress_test

import (
	"os"
	"time"

	"github.com/twinslot/twinslot/tools/progress"
)

func ExampleBar() {
	t := time.Unix(0, 0)
	clock := func() time.Time { return t }
	bar := progress.New(os.Stdout, false, "download", 4<<20, clock)
	t = t.Add(2 * time.Second)
	bar.Set(4<<20, "")
	bar.Finish()
	// Output:
	// download 100.0% 4.0 MiB/4.0 MiB 2.0 MiB/s
	// download 100.0% 4.0 MiB/4.0 MiB in 2s (2.0 MiB/s)
}
