package window_test

import (
	"fmt"
	"time"

	"github.com/twinslot/twinslot/locksmith/window"
)

func ExampleSchedule_Next() {
	loc, _ := time.LoadLocation("America/New_York")
	s, err := window.ParseSchedule("Sun 02:30, Wed 23:00", "1h", loc)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Sunday 2026-03-08 skips 02:00-03:00: the window opens when the clock jumps to 03:00.
	now := time.Date(2026, 3, 7, 12, 0, 0, 0, loc)
	iv, _ := s.Next(now)
	fmt.Println(s.Open(now), iv.Start.Format(time.RFC3339), iv.End.Format(time.RFC3339))
	// Output: false 2026-03-08T03:00:00-04:00 2026-03-08T04:00:00-04:00
}
