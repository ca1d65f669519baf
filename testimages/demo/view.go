package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/twinslot/twinslot/testimages/fleet"
	"github.com/twinslot/twinslot/tools/cli"
)

// recentEvents is how many event lines the terminal view keeps under the table.
const recentEvents = 6

// view is the live view: on a terminal a table repainted in place, with the latest events under
// it; otherwise one timestamped line per event worth reading. Either way it watches the
// fleet's state for the peaks the verdict checks.
type view struct {
	w     io.Writer
	tty   bool
	max   int
	fleet *fleet.Fleet
	t0    time.Time

	mu          sync.Mutex
	recent      []string
	drawn       int // lines of the last paint (terminal)
	rebootPeak  int // most hosts between a reboot request and the next boot, from events
	holdersPeak int // most reboot slot holders, from the fleet's etcd watch
	over        []string
}

func newView(w io.Writer, max int, t0 time.Time) *view {
	return &view{w: w, tty: cli.IsTerminal(w), max: max, t0: t0}
}

func (v *view) stamp(at time.Time) string {
	return fmt.Sprintf("%6.2fs", at.Sub(v.t0).Seconds())
}

// quiet are the events the plain view leaves out: every host checks in every interval.
func quiet(e fleet.Event) bool {
	switch e.Kind {
	case fleet.EventStatus:
		return e.Text == "updated: checking_for_update" || e.Text == "updated: idle"
	case fleet.EventLock:
		return strings.HasPrefix(e.Text, "locksmithd: starting") || strings.HasPrefix(e.Text, "locksmithd: idle")
	}
	return false
}

// event is the fleet's OnEvent hook (called in order, under the fleet's lock).
func (v *view) event(e fleet.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rebootPeak = max(v.rebootPeak, e.Rebooting)
	if e.Rebooting > v.max {
		v.over = append(v.over, fmt.Sprintf("%d hosts rebooting at %s", e.Rebooting, v.stamp(e.At)))
	}
	if quiet(e) {
		return
	}
	line := fmt.Sprintf("%s  %-7s %s", v.stamp(e.At), e.Host, e.Text)
	if e.Host == "" {
		line = fmt.Sprintf("%s  %s", v.stamp(e.At), e.Text)
	}
	if !v.tty {
		fmt.Fprintln(v.w, line)
		return
	}
	v.recent = append(v.recent, line)
	if len(v.recent) > recentEvents {
		v.recent = v.recent[len(v.recent)-recentEvents:]
	}
}

// note prints one of the demo's own lines (commands, sections) above the live table.
func (v *view) note(s string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.eraseLocked()
	fmt.Fprintln(v.w, s)
}

func (v *view) eraseLocked() {
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.drawn)
		v.drawn = 0
	}
}

// start follows the fleet until stop is called; on a terminal it repaints the table.
func (v *view) start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ch := v.fleet.Changed()
			v.observe(v.fleet.State())
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			if v.tty { // repaint at most every tick
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		v.observe(v.fleet.State())
		v.mu.Lock()
		v.eraseLocked()
		v.mu.Unlock()
	}
}

func (v *view) observe(st fleet.State) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.holdersPeak = max(v.holdersPeak, len(st.Holders))
	if st.Max > 0 && len(st.Holders) > st.Max {
		v.over = append(v.over, fmt.Sprintf("%d reboot slot holders, max %d", len(st.Holders), st.Max))
	}
	if !v.tty {
		return
	}
	var b strings.Builder
	tw := cli.Table(&b)
	fmt.Fprintln(tw, "HOST\tVERSION\tSLOT\tAGENT\tBOOT\tLOCKSMITHD\tREBOOT SLOT")
	for _, h := range st.Hosts {
		agent := h.Operation
		switch h.Operation {
		case "downloading":
			agent = fmt.Sprintf("downloading %s %3.0f%%", h.NewVersion, 100*h.Progress)
		case "idle", "down":
		default:
			if h.NewVersion != "" {
				agent += " " + h.NewVersion
			}
		}
		boot := h.BootState
		if len(h.Boots) > 0 {
			if sym := h.Boots[len(h.Boots)-1].Outcome.Symbol(); sym != "" {
				boot += " " + sym
			}
		}
		slot := "-"
		if sl, ok := st.Holder(h.MachineID); ok {
			slot = "HOLDS"
			if sl.Holder.State != "" {
				slot += " (" + string(sl.Holder.State) + ")"
			}
		}
		// Fixed widths keep the table from jumping as states come and go.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%-26s\t%-13s\t%-17s\t%s\n", h.Name, h.Version, h.Slot, agent, boot, h.Lock, slot)
	}
	tw.Flush()
	b.WriteString(st.HoldersText() + "\n")
	for _, l := range v.recent {
		b.WriteString(l + "\n")
	}
	// Lines are cut to the terminal's width: a wrapped line would throw off the repaint.
	width := v.width()
	var out strings.Builder
	for line := range strings.Lines(b.String()) {
		line = strings.TrimSuffix(line, "\n")
		if r := []rune(line); len(r) > width {
			line = string(r[:width-1]) + "…"
		}
		out.WriteString(line + "\n")
	}
	v.eraseLocked()
	io.WriteString(v.w, out.String())
	v.drawn = strings.Count(out.String(), "\n")
}

// width is the terminal's width in columns (80 when it cannot be told).
func (v *view) width() int {
	if f, ok := v.w.(*os.File); ok {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 10 {
			return w
		}
	}
	return 80
}

func (v *view) peaks() (reboot, holders int, over []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rebootPeak, v.holdersPeak, v.over
}
