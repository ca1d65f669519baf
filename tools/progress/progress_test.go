package progress

import (
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBarLogLines(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out strings.Builder
	b := New(&out, false, "apply", 100<<20, c.now)
	for i := 1; i <= 20; i++ {
		c.t = c.t.Add(time.Second)
		b.Set(int64(i)*(5<<20), "reused 1.0 MiB")
	}
	b.Finish()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// One line per LogInterval (5 s) over 20 s, plus the final one.
	if len(lines) != 5 {
		t.Fatalf("got %d lines, want 5:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], "5.0%") || !strings.Contains(lines[0], "reused 1.0 MiB") {
		t.Errorf("first line = %q", lines[0])
	}
	if !strings.Contains(lines[4], "100.0%") || !strings.Contains(lines[4], "in 20s (5.0 MiB/s)") {
		t.Errorf("final line = %q", lines[4])
	}
	if strings.Contains(out.String(), "\r") {
		t.Error("carriage return written to a non-terminal")
	}
}

func TestBarRateWindowAndETA(t *testing.T) {
	c := &clock{t: time.Unix(0, 0)}
	var out strings.Builder
	b := New(&out, true, "x", 1000, c.now)
	// 10 s slow, then 10 s fast: the windowed rate follows the fast part.
	for i := 1; i <= 10; i++ {
		c.t = c.t.Add(time.Second)
		b.Set(int64(i), "")
	}
	for i := 1; i <= 10; i++ {
		c.t = c.t.Add(time.Second)
		b.Set(10+int64(i)*50, "")
	}
	if r := b.Rate(); r < 49 || r > 51 {
		t.Fatalf("rate = %v, want ~50/s", r)
	}
	if !strings.Contains(out.String(), "\r\033[K") || !strings.Contains(out.String(), "ETA 10s") {
		t.Errorf("terminal output lacks redraw or ETA: %q", out.String())
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB", 2 << 40: "2.0 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
