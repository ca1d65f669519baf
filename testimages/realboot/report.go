package realboot

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Boot is one boot of the VM, as seen from outside.
type Boot struct {
	N          int           `json:"boot"`
	What       string        `json:"what"`
	Slot       string        `json:"slot"`    // what GRUB said it boots
	Version    string        `json:"version"` // the running /usr's os-release
	Marker     string        `json:"initrd_marker"`
	Gate       string        `json:"gate,omitempty"`
	Events     []string      `json:"events"` // what omahad received from the host during the boot
	Fetched    int64         `json:"fetched_bytes,omitempty"`
	Took       time.Duration `json:"took_ns"`
	Note       string        `json:"note,omitempty"`
	ConsoleLog string        `json:"console_log"`

	started time.Time
	con     *console
	file    io.Closer
	run     interface {
		Done() <-chan struct{}
		Kill() error
	}
	cancel context.CancelFunc
}

// Check is one verification made from outside the guest.
type Check struct {
	Step   string `json:"step"`
	What   string `json:"what"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Report is the outcome of a walk.
type Report struct {
	Boots   []*Boot       `json:"boots"`
	Checks  []Check       `json:"checks"`
	Error   string        `json:"error,omitempty"`
	OK      bool          `json:"ok"`
	Verdict string        `json:"verdict"`
	Took    time.Duration `json:"took_ns"`
}

func (w *walk) report(err error) *Report {
	r := &Report{Boots: w.boots, Checks: w.checks, Took: time.Since(w.start)}
	failed := 0
	for _, c := range w.checks {
		if !c.OK {
			failed++
		}
	}
	switch {
	case err != nil:
		r.Error = err.Error()
		r.Verdict = "FAILED: " + err.Error()
	case failed > 0:
		r.Verdict = fmt.Sprintf("FAILED: %d of %d checks failed", failed, len(w.checks))
	case len(w.checks) == 0:
		r.Verdict = "FAILED: nothing was checked"
	default:
		r.OK = true
		r.Verdict = fmt.Sprintf("OK: all %d checks passed in %d boots: a power cut mid-download resumed, v2 booted from USR-B under GRUB gptprio with its own kernel and initrd and was committed, the broken v3 failed its health gate and the host came back on v2 with its lock kept and the group halted, and a slot whose kernel never came up was left by the tries counter alone", len(w.checks), len(w.boots))
	}
	return r
}

// Print writes the boot table, the checks and the verdict.
func (r *Report) Print(out io.Writer) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BOOT\tSLOT\tVERSION\tINITRD MARKER\tGATE\tEVENTS REPORTED\tTOOK\tNOTE")
	for _, b := range r.Boots {
		ev := strings.Join(b.Events, " ")
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.N, dash(b.Slot), dash(b.Version), dash(b.Marker), dash(b.Gate),
			dash(ev), b.Took.Round(time.Second), b.Note)
	}
	tw.Flush()
	fmt.Fprintln(out)
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(out, "%s [%s] %s", mark, c.Step, c.What)
		if c.Detail != "" {
			fmt.Fprintf(out, ": %s", c.Detail)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "\nverdict: %s (%s)\n", r.Verdict, r.Took.Round(time.Second))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
