package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

const (
	// Interval is the redraw period on a terminal.
	Interval = 100 * time.Millisecond
	// LogInterval is the period of plain progress lines when not on a terminal.
	LogInterval = 5 * time.Second
	// window is how far back the rate looks.
	window = 5 * time.Second
	width  = 30
)

// Bar is a progress line. It is safe for concurrent use.
type Bar struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	label    string
	total    int64
	done     int64
	extra    string
	now      func() time.Time
	start    time.Time
	last     time.Time
	samples  []sample
	finished bool
}

type sample struct {
	t time.Time
	n int64
}

// New returns a bar writing to w. tty selects in-place redraw; total may be 0 when unknown.
// now may be nil for time.Now.
func New(w io.Writer, tty bool, label string, total int64, now func() time.Time) *Bar {
	if now == nil {
		now = time.Now
	}
	t := now()
	return &Bar{w: w, tty: tty, label: label, total: total, now: now, start: t, samples: []sample{{t, 0}}}
}

// SetTotal changes the total (when it becomes known late).
func (b *Bar) SetTotal(total int64) {
	b.mu.Lock()
	b.total = total
	b.mu.Unlock()
}

// Set records done bytes and extra text (such as "reused 310 MB") and redraws when due.
func (b *Bar) Set(done int64, extra string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.done, b.extra = done, extra
	t := b.now()
	b.samples = append(b.samples, sample{t, done})
	for len(b.samples) > 2 && t.Sub(b.samples[1].t) > window {
		b.samples = b.samples[1:]
	}
	every := LogInterval
	if b.tty {
		every = Interval
	}
	if t.Sub(b.last) >= every {
		b.last = t
		b.draw(t, false)
	}
}

// Add adds n to done.
func (b *Bar) Add(n int64) {
	b.mu.Lock()
	done, extra := b.done+n, b.extra
	b.mu.Unlock()
	b.Set(done, extra)
}

// Finish draws the final line and ends it with a newline.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished {
		return
	}
	b.finished = true
	b.draw(b.now(), true)
}

// Rate returns bytes per second over the recent window.
func (b *Bar) Rate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rate()
}

func (b *Bar) rate() float64 {
	first, last := b.samples[0], b.samples[len(b.samples)-1]
	d := last.t.Sub(first.t).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(last.n-first.n) / d
}

func (b *Bar) draw(t time.Time, final bool) {
	var sb strings.Builder
	if b.tty {
		sb.WriteString("\r\033[K")
	}
	sb.WriteString(b.label)
	if b.total > 0 {
		frac := float64(b.done) / float64(b.total)
		frac = min(max(frac, 0), 1)
		if b.tty {
			n := int(frac * width)
			sb.WriteString(" [" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]")
		}
		fmt.Fprintf(&sb, " %5.1f%% %s/%s", frac*100, Bytes(b.done), Bytes(b.total))
	} else {
		fmt.Fprintf(&sb, " %s", Bytes(b.done))
	}
	if final {
		el := t.Sub(b.start)
		avg := 0.0
		if el > 0 {
			avg = float64(b.done) / el.Seconds()
		}
		fmt.Fprintf(&sb, " in %s (%s/s)", el.Round(time.Millisecond), Bytes(int64(avg)))
	} else if r := b.rate(); r > 0 {
		fmt.Fprintf(&sb, " %s/s", Bytes(int64(r)))
		if b.total > b.done {
			eta := time.Duration(float64(b.total-b.done) / r * float64(time.Second))
			fmt.Fprintf(&sb, " ETA %s", eta.Round(time.Second))
		}
	}
	if b.extra != "" {
		sb.WriteString(" " + b.extra)
	}
	if !b.tty || final {
		sb.WriteString("\n")
	}
	io.WriteString(b.w, sb.String())
}

// Bytes formats n with binary units (B, KiB, MiB, GiB, TiB).
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}
