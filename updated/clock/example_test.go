package clock_test

import (
	"fmt"
	"time"

	"github.com/twinslot/twinslot/updated/clock"
)

func ExampleFake() {
	f := clock.NewFake(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))
	retry := f.After(5 * time.Minute)
	fmt.Println("pending:", f.Pending())
	f.Advance(5 * time.Minute)
	fmt.Println("fired at:", (<-retry).Format(time.TimeOnly))
	// Output:
	// pending: [5m0s]
	// fired at: 10:05:00
}
