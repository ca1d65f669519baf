package updatectl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

// The commands that talk to the update agent (updated): status, check and watch over D-Bus,
// history from its state file, download from the update server.
func agentCommands(env Env) []cli.Command {
	return []cli.Command{
		{Name: "status", Summary: "show the agent's update status and the current boot's status", Run: env.runStatus},
		{Name: "check", Summary: "check for an update now (--wait: follow it until done)", Run: env.runCheck},
		{Name: "watch", Summary: "follow the agent's status live, with a progress bar while downloading", Run: env.runWatch},
		{Name: "reset", Summary: "clear failures and backoff, or cancel an installed update before the reboot", Run: env.runReset},
		{Name: "history", Summary: "list past update attempts and their outcomes", Run: env.runHistory},
		{Name: "download", Summary: "fetch the payload the update server offers into a file (resumable)", Run: env.runDownload},
		{Name: "config", Summary: "show the effective update.conf values and the file each came from", Run: env.runConfig},
		{Name: "enroll", Summary: "enroll this host with its update server (an enrollment token for a host credential)", Run: env.runEnroll},
	}
}

// DefaultStateDir is where updated keeps its state file.
const DefaultStateDir = "/var/lib/twinslot"

// connect opens the bus named by --bus: "system" or an address.
func connect(addr string) (*dbus.Conn, error) {
	var c *dbus.Conn
	var err error
	if addr == "" || addr == "system" {
		c, err = dbus.ConnectSystemBus()
	} else {
		c, err = dbus.Connect(addr)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to D-Bus %s: %w", addr, err)
	}
	return c, nil
}

const busHelp = `bus: "system" or a D-Bus address such as unix:path=/run/dbus/system_bus_socket`

// client connects to the agent on bus; close releases the connection.
func client(bus string) (c *dbusapi.Client, close func(), err error) {
	conn, err := connect(bus)
	if err != nil {
		return nil, nil, err
	}
	return dbusapi.NewClient(conn), func() { conn.Close() }, nil
}

// StatusReport is the output of `updatectl status --json`.
type StatusReport struct {
	dbusapi.Status
	Boot dbusapi.BootStatus `json:"boot"`
	// LastError is the last failure the agent reported, from its state file (omitted when
	// there is none or the file cannot be read).
	LastError *updated.Failure `json:"last_error,omitempty"`
}

func (env Env) runStatus(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl status", "[--json] [--bus ADDR]", `
Show what updated is doing (update_engine's GetStatus: operation, progress, last check, the
version being installed) and what it knows about the current boot (verifying, committed,
rolled-back or steady; booted and previous version; slot).`)
	asJSON := fs.Bool("json", false, "print JSON")
	bus := fs.String("bus", "system", busHelp)
	dir := fs.String("state-dir", DefaultStateDir, "updated's state `directory` (for the last error)")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	c, closeBus, err := client(*bus)
	if err != nil {
		return err
	}
	defer closeBus()
	st, err := c.GetStatus(ctx)
	if err != nil {
		return err
	}
	bs, err := c.GetBootStatus(ctx)
	if err != nil {
		return err
	}
	last := lastFailure(*dir)
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, StatusReport{Status: st, Boot: bs, LastError: last})
	}
	tw := cli.Table(stdio.Stdout)
	fmt.Fprintf(tw, "operation:\t%s\n", st.CurrentOperation)
	fmt.Fprintf(tw, "last checked:\t%s\n", lastChecked(st.LastCheckedTime, time.Now()))
	if st.NewVersion != "" && st.NewVersion != dbusapi.NoVersion {
		fmt.Fprintf(tw, "new version:\t%s (%s)\n", st.NewVersion, progress.Bytes(st.NewSize))
		fmt.Fprintf(tw, "progress:\t%.1f%%\n", st.Progress*100)
	}
	fmt.Fprintf(tw, "boot:\t%s\n", describeBoot(bs))
	if last != nil {
		fmt.Fprintf(tw, "last error:\t%s\n", describeFailure(last))
	}
	return tw.Flush()
}

// parseNone parses flags of a command that takes no positional arguments.
func parseNone(fs *flag.FlagSet, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	return cli.NArgs(pos, 0, 0, "no arguments")
}

func lastChecked(unix int64, now time.Time) string {
	if unix == 0 {
		return "never"
	}
	t := time.Unix(unix, 0)
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
}

func describeBoot(b dbusapi.BootStatus) string {
	switch b.State {
	case updated.BootVerifying:
		return fmt.Sprintf("verifying %s on %s (health gate running; updated from %s)", b.BootedVersion, b.Slot, orUnknown(b.PreviousVersion))
	case updated.BootCommitted:
		return fmt.Sprintf("committed %s on %s (updated from %s)", b.BootedVersion, b.Slot, orUnknown(b.PreviousVersion))
	case updated.BootRolledBack:
		return fmt.Sprintf("ROLLED BACK: %s failed; running %s on %s", b.PreviousVersion, b.BootedVersion, b.Slot)
	}
	return fmt.Sprintf("%s, running %s on %s", b.State, b.BootedVersion, b.Slot)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (env Env) runCheck(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl check", "[--wait [--start-timeout D]] [--bus ADDR]", `
Ask updated to check for an update now (AttemptUpdate; a no-op unless it is idle). With
--wait, follow the attempt until the agent is idle again or waits for a reboot, and fail
when the attempt failed (like update_engine_client -update).`)
	wait := fs.Bool("wait", false, "follow the attempt until it ends")
	startTimeout := fs.Duration("start-timeout", 30*time.Second, "with --wait: fail when no check starts within this `duration`")
	bus := fs.String("bus", "system", busHelp)
	dir := fs.String("state-dir", DefaultStateDir, "updated's state `directory` (for why an attempt failed)")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	c, closeBus, err := client(*bus)
	if err != nil {
		return err
	}
	defer closeBus()
	var sub *dbusapi.Subscription
	if *wait {
		if sub, err = c.Subscribe(ctx); err != nil {
			return err
		}
		defer sub.Close()
	}
	if err := c.AttemptUpdate(ctx); err != nil {
		return err
	}
	if !*wait {
		fmt.Fprintln(stdio.Stdout, "update check requested")
		return nil
	}
	w := newWatcher(stdio)
	defer w.finish()
	// The agent ignores AttemptUpdate unless idle with a server configured: give up if no
	// check starts in time.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	started, failed, timedOut := false, false, false
	timer := time.AfterFunc(*startTimeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if !started {
			timedOut = true
			cancel()
		}
	})
	defer timer.Stop()
	err = follow(fctx, c, sub, w, func(st dbusapi.Status) bool {
		mu.Lock()
		defer mu.Unlock()
		switch st.CurrentOperation {
		case dbusapi.OpIdle:
			return started
		case dbusapi.OpUpdatedNeedReboot:
			return true
		case dbusapi.OpReportingErrorEvent:
			failed = true
		}
		started = true
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	switch {
	case timedOut:
		return fmt.Errorf("no update check started within %s: is updated busy, or SERVER disabled in update.conf?", *startTimeout)
	case err != nil:
		return err
	case failed:
		if f := lastFailure(*dir); f != nil {
			return fmt.Errorf("the update attempt failed: %s; see updatectl history and journalctl -u updated", describeFailure(f))
		}
		return errors.New("the update attempt failed; see updatectl history and journalctl -u updated")
	}
	return nil
}

func (env Env) runReset(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl reset", "[--bus ADDR]", `
Call ResetStatus. While idle: forget the failures, the backoff and the versions that failed on
this host (they may be installed again). While an installed update waits for the reboot:
cancel it, so the running slot boots next again. Refused in any other state.`)
	bus := fs.String("bus", "system", busHelp)
	if err := parseNone(fs, args); err != nil {
		return err
	}
	c, closeBus, err := client(*bus)
	if err != nil {
		return err
	}
	defer closeBus()
	if err := c.ResetStatus(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdio.Stdout, "status reset")
	return nil
}

func (env Env) runWatch(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl watch", "[--bus ADDR]", `
Print updated's status as it changes (StatusUpdate and BootStatus signals), with a live
progress bar while a payload is downloaded and written, until interrupted.`)
	bus := fs.String("bus", "system", busHelp)
	if err := parseNone(fs, args); err != nil {
		return err
	}
	c, closeBus, err := client(*bus)
	if err != nil {
		return err
	}
	defer closeBus()
	sub, err := c.Subscribe(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	w := newWatcher(stdio)
	defer w.finish()
	err = follow(ctx, c, sub, w, func(dbusapi.Status) bool { return false })
	if ctx.Err() != nil {
		return nil // interrupted: the normal end of watch
	}
	return err
}

// follow prints the current status, then every signal, until stop says so (or ctx ends).
func follow(ctx context.Context, c *dbusapi.Client, sub *dbusapi.Subscription, w *watcher, stop func(dbusapi.Status) bool) error {
	st, err := c.GetStatus(ctx)
	if err != nil {
		return err
	}
	bs, err := c.GetBootStatus(ctx)
	if err != nil {
		return err
	}
	w.boot(bs)
	w.status(st)
	for !stop(st) {
		s, err := sub.Next(ctx)
		if err != nil {
			return err
		}
		switch {
		case s.Status != nil:
			st = *s.Status
			w.status(st)
		case s.Boot != nil:
			w.boot(*s.Boot)
		}
	}
	return nil
}

// watcher prints status changes as lines and download progress as a bar.
type watcher struct {
	out    io.Writer
	tty    bool
	last   dbusapi.Status
	lastBS dbusapi.BootStatus
	bar    *progress.Bar
}

func newWatcher(stdio cli.IO) *watcher {
	return &watcher{out: stdio.Stdout, tty: cli.IsTerminal(stdio.Stdout)}
}

func (w *watcher) status(st dbusapi.Status) {
	if st.CurrentOperation == dbusapi.OpDownloading {
		if w.bar == nil {
			if w.last.CurrentOperation != dbusapi.OpDownloading {
				fmt.Fprintf(w.out, "%s %s\n", stamp(), strings.TrimPrefix(st.CurrentOperation, "UPDATE_STATUS_"))
			}
			w.bar = progress.New(w.out, w.tty, "installing "+st.NewVersion, st.NewSize, nil)
		}
		w.bar.Set(int64(st.Progress*float64(st.NewSize)), "")
		w.last = st
		return
	}
	if w.bar != nil {
		w.bar.Set(int64(st.Progress*float64(st.NewSize)), "")
		w.bar.Finish()
		w.bar = nil
	}
	if st.CurrentOperation == w.last.CurrentOperation && st.NewVersion == w.last.NewVersion {
		return
	}
	line := strings.TrimPrefix(st.CurrentOperation, "UPDATE_STATUS_")
	if st.NewVersion != "" && st.NewVersion != dbusapi.NoVersion {
		line += " " + st.NewVersion
	}
	fmt.Fprintf(w.out, "%s %s\n", stamp(), line)
	w.last = st
}

func (w *watcher) boot(b dbusapi.BootStatus) {
	if b == w.lastBS {
		return
	}
	w.lastBS = b
	fmt.Fprintf(w.out, "%s boot: %s\n", stamp(), describeBoot(b))
}

func (w *watcher) finish() {
	if w.bar != nil {
		w.bar.Finish()
	}
}

func stamp() string { return time.Now().Format("15:04:05") }
