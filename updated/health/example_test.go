package health_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twinslot/twinslot/updated/health"
)

type running struct{}

func (running) SystemState(context.Context) (string, error)   { return "running", nil }
func (running) FailedUnits(context.Context) ([]string, error) { return nil, nil }

func ExampleGate() {
	g := &health.Gate{
		System:   running{},               // on a host: systemd over D-Bus
		Dir:      "/nonexistent/health.d", // executables that must exit 0
		Deadline: time.Minute,
	}
	res := g.Run(context.TODO())
	fmt.Println(res.Passed, len(res.Checks))
	// Output: true 1
}
