package updated

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bootTime is the kernel's uptime, the clock /proc/uptime shows, not a process's own.
func TestBootTime(t *testing.T) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Skip("no /proc/uptime:", err)
	}
	secs, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	proc := time.Duration(secs * float64(time.Second))
	got := bootTime()
	if d := got - proc; d < -time.Second || d > time.Minute {
		t.Fatalf("bootTime() = %v, /proc/uptime %v", got, proc)
	}
}
