package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/twinslot/twinslot/updated/clock"
)

// Probe reports systemd's view of the host. The real one talks to systemd over D-Bus; the
// simulated host answers from the booted image.
type Probe interface {
	// SystemState is systemd's SystemState property: initializing, starting, running, degraded,
	// maintenance or stopping.
	SystemState(ctx context.Context) (string, error)
	// FailedUnits names the units in the failed state.
	FailedUnits(ctx context.Context) ([]string, error)
}

// Clock is the time source (nil means the real clock).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// Defaults.
const (
	DefaultDeadline     = 5 * time.Minute
	DefaultRetry        = 5 * time.Second
	DefaultCheckTimeout = 60 * time.Second
	// MaxOutput bounds what is kept of a check's output (its tail).
	MaxOutput = 2048
	// MaxChecks bounds the number of health.d executables and URLs.
	MaxChecks = 256
)

// Gate is one health gate run's configuration.
type Gate struct {
	System       Probe         // nil: no systemd check (e.g. SERVER-less test hosts)
	Dir          string        // health.d directory; "" or missing: none
	URLs         []string      // URLs that must answer 2xx
	Env          []string      // extra environment for executables (KEY=VALUE)
	Deadline     time.Duration // whole gate; 0: DefaultDeadline
	Retry        time.Duration // between rounds; 0: DefaultRetry
	CheckTimeout time.Duration // one executable run or HTTP request; 0: DefaultCheckTimeout
	HTTP         *http.Client  // nil: a private client without proxy or keep-alive
	Clock        Clock
	Logger       *slog.Logger

	// Used is how much of the deadline earlier runs of this gate took, for a gate run again
	// after its process restarted (0: none). The run gets Deadline minus Used, at most Deadline
	// and at least nothing; a gate whose deadline already passed fails at once, without running
	// a check.
	Used time.Duration
}

// Check is one check's outcome.
type Check struct {
	Name     string `json:"name"`
	Passed   bool   `json:"passed"`
	Attempts int    `json:"attempts"`
	Detail   string `json:"detail,omitempty"`
}

// Result is a gate's outcome.
type Result struct {
	Passed  bool          `json:"passed"`
	Checks  []Check       `json:"checks"`
	Elapsed time.Duration `json:"elapsed"`          // of this run only (see Gate.Used)
	Reason  string        `json:"reason,omitempty"` // why it failed, one line
}

// Summary is a one-line description for logs and error reports.
func (r Result) Summary() string {
	if r.Passed {
		return fmt.Sprintf("health gate passed (%d checks in %s)", len(r.Checks), r.Elapsed.Round(time.Millisecond))
	}
	var failed []string
	for _, c := range r.Checks {
		if !c.Passed {
			failed = append(failed, c.Name+": "+c.Detail)
		}
	}
	s := "health gate failed: " + r.Reason
	if len(failed) > 0 {
		s += "; " + strings.Join(failed, "; ")
	}
	return s
}

type check struct {
	name string
	run  func(ctx context.Context) (ok, final bool, detail string)
}

// Run runs the gate until every check passed, a check failed for good, the deadline passed or
// ctx ended.
func (g *Gate) Run(ctx context.Context) Result {
	clk := g.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	log := g.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	deadline := orDefault(g.Deadline, DefaultDeadline)
	retry := orDefault(g.Retry, DefaultRetry)
	start := clk.Now()
	// What earlier runs of this gate used up (never negative; a huge Used leaves nothing).
	ran := max(g.Used, 0)
	end := start.Add(max(deadline-min(ran, deadline), 0))

	hc := g.HTTP
	if hc == nil {
		// A private client, closed when the gate ends, so no connection outlives it.
		hc = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		defer hc.CloseIdleConnections()
	}
	checks, err := g.checks(hc)
	res := Result{}
	if err != nil {
		res.Reason = err.Error()
		return res
	}
	res.Checks = make([]Check, len(checks))
	for i, c := range checks {
		res.Checks[i].Name = c.name
	}
	done := func(reason string) Result {
		res.Elapsed = clk.Now().Sub(start)
		res.Reason = reason
		res.Passed = reason == ""
		return res
	}
	if !end.After(start) {
		// Resumed after its deadline (its process was down or restarting meanwhile): a late
		// pass must not commit the slot, so fail without running anything.
		for i := range res.Checks {
			res.Checks[i].Detail = "not run: the deadline passed before the gate resumed"
		}
		return done(fmt.Sprintf("deadline of %s passed with %d checks not passing (the gate started %s ago, before a restart)",
			deadline, len(checks), ran.Round(time.Second)))
	}
	for {
		pending := 0
		for i, c := range checks {
			rc := &res.Checks[i]
			if rc.Passed {
				continue
			}
			rc.Attempts++
			ok, final, detail := c.run(ctx)
			rc.Passed, rc.Detail = ok, detail
			switch {
			case ok:
				log.Info("health check passed", "check", c.name, "attempt", rc.Attempts)
			case final:
				log.Error("health check failed", "check", c.name, "detail", detail)
				return done(c.name + " failed")
			default:
				pending++
				log.Info("health check not passed yet", "check", c.name, "attempt", rc.Attempts, "detail", detail)
			}
		}
		if pending == 0 {
			return done("")
		}
		if ctx.Err() != nil {
			return done("interrupted: " + ctx.Err().Error())
		}
		left := end.Sub(clk.Now())
		if left <= 0 {
			return done(fmt.Sprintf("deadline of %s passed with %d checks not passing", deadline, pending))
		}
		select {
		case <-ctx.Done():
			return done("interrupted: " + ctx.Err().Error())
		case <-clk.After(min(retry, left)):
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// checks lists the gate's checks: systemd, then health.d executables, then URLs.
func (g *Gate) checks(hc *http.Client) ([]check, error) {
	var out []check
	if g.System != nil {
		out = append(out, check{"systemd", g.systemd})
	}
	exes, err := Executables(g.Dir)
	if err != nil {
		return nil, err
	}
	for _, p := range exes {
		out = append(out, check{"health.d/" + filepath.Base(p), g.executable(p)})
	}
	for _, u := range g.URLs {
		out = append(out, check{"url " + u, g.url(hc, u)})
	}
	if len(out) > MaxChecks {
		return nil, fmt.Errorf("health: %d checks configured, more than %d", len(out), MaxChecks)
	}
	return out, nil
}

// Executables lists the health.d checks in dir, in the order they run.
func Executables(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("health: read %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") {
			continue
		}
		p := filepath.Join(dir, n)
		st, err := os.Stat(p) // follows symlinks
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func (g *Gate) systemd(ctx context.Context) (bool, bool, string) {
	ctx, cancel := context.WithTimeout(ctx, orDefault(g.CheckTimeout, DefaultCheckTimeout))
	defer cancel()
	state, err := g.System.SystemState(ctx)
	if err != nil {
		return false, false, "cannot read the system state: " + err.Error()
	}
	switch state {
	case "running":
		return true, false, "running"
	case "initializing", "starting":
		return false, false, "system is " + state
	}
	detail := "system is " + state
	if units, err := g.System.FailedUnits(ctx); err != nil {
		detail += " (failed units unknown: " + err.Error() + ")"
	} else if len(units) > 0 {
		detail += ", failed units: " + strings.Join(units, ", ")
	}
	return false, true, detail
}

func (g *Gate) executable(path string) func(context.Context) (bool, bool, string) {
	return func(ctx context.Context) (bool, bool, string) {
		ctx, cancel := context.WithTimeout(ctx, orDefault(g.CheckTimeout, DefaultCheckTimeout))
		defer cancel()
		out := &tail{max: MaxOutput}
		cmd := exec.CommandContext(ctx, path)
		cmd.Dir = "/"
		cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, g.Env...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		msg := strings.TrimSpace(out.String())
		switch {
		case err == nil:
			return true, false, msg
		case ctx.Err() != nil:
			return false, false, "timed out: " + ctx.Err().Error()
		case msg != "":
			return false, false, err.Error() + ": " + lastLine(msg)
		default:
			return false, false, err.Error()
		}
	}
}

func (g *Gate) url(hc *http.Client, u string) func(context.Context) (bool, bool, string) {
	return func(ctx context.Context) (bool, bool, string) {
		ctx, cancel := context.WithTimeout(ctx, orDefault(g.CheckTimeout, DefaultCheckTimeout))
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return false, true, "bad URL: " + err.Error()
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, false, err.Error()
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return false, false, "HTTP " + resp.Status
		}
		return true, false, "HTTP " + resp.Status
	}
}

// tail keeps the last max bytes written.
type tail struct {
	max int
	buf bytes.Buffer
}

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	t.buf.Write(p)
	if t.buf.Len() > t.max {
		b := t.buf.Bytes()[t.buf.Len()-t.max:]
		t.buf = *bytes.NewBuffer(append([]byte(nil), b...))
	}
	return n, nil
}

func (t *tail) String() string { return t.buf.String() }

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
