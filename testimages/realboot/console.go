package realboot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ReportPrefix starts the status lines the guest's e2e report unit writes to the serial
// console every few seconds: space-separated key=value pairs (see reportScript).
const ReportPrefix = "TWINSLOT-E2E "

// grubLine is what the image's grub.cfg prints before it boots a slot.
var grubLine = regexp.MustCompile(`twinslot: booting USR-([ab]) \(([0-9a-f-]{36})\)`)

// maxLine bounds one console line kept for parsing (the file gets everything).
const maxLine = 8 << 10

// console follows one boot's serial console: everything goes to the log file, report lines
// are parsed into the latest report, and waiters are woken on every new line.
type console struct {
	log io.Writer

	mu      sync.Mutex
	partial []byte
	report  map[string]string // latest TWINSLOT-E2E line
	reports int
	grub    string // "a" or "b": the slot GRUB said it boots
	lines   []string
	wake    chan struct{}
}

func newConsole(log io.Writer) *console {
	return &console{log: log, wake: make(chan struct{})}
}

func (c *console) Write(p []byte) (int, error) {
	if _, err := c.log.Write(p); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	changed := false
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			if len(c.partial) > maxLine {
				c.partial = c.partial[:0]
			}
			break
		}
		line := strings.TrimRight(string(c.partial[:i]), "\r")
		c.partial = c.partial[i+1:]
		c.line(line)
		changed = true
	}
	if changed {
		close(c.wake)
		c.wake = make(chan struct{})
	}
	return len(p), nil
}

func (c *console) line(l string) {
	if len(l) > maxLine {
		l = l[:maxLine]
	}
	if m := grubLine.FindStringSubmatch(l); m != nil && c.grub == "" {
		c.grub = m[1]
	}
	if i := strings.Index(l, ReportPrefix); i >= 0 {
		c.report = parseReport(l[i+len(ReportPrefix):])
		c.reports++
	}
	if len(c.lines) < 20000 {
		c.lines = append(c.lines, l)
	}
}

// parseReport splits "k=v k=v" (values have no blanks).
func parseReport(s string) map[string]string {
	r := map[string]string{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			r[k] = v
		}
	}
	return r
}

// Report returns a copy of the latest report line's fields (nil before the first).
func (c *console) Report() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.report == nil {
		return nil
	}
	r := make(map[string]string, len(c.report))
	for k, v := range c.report {
		r[k] = v
	}
	return r
}

// GrubSlot is "a" or "b" once GRUB said which slot it boots.
func (c *console) GrubSlot() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grub
}

// Grep returns the console lines that contain s.
func (c *console) Grep(s string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// waitReport waits for a report line for which ok is true; gone ends the wait when the
// machine stops.
func (c *console) waitReport(ctx context.Context, what string, gone <-chan struct{}, ok func(map[string]string) bool) (map[string]string, error) {
	for {
		c.mu.Lock()
		r, wake := c.report, c.wake
		c.mu.Unlock()
		if r != nil && ok(r) {
			return c.Report(), nil
		}
		select {
		case <-ctx.Done():
			return c.Report(), fmt.Errorf("waiting for %s: %w (last report: %v)", what, ctx.Err(), c.Report())
		case <-gone:
			return c.Report(), fmt.Errorf("the machine stopped while waiting for %s (last report: %v)", what, c.Report())
		case <-wake:
		case <-time.After(time.Second):
		}
	}
}
