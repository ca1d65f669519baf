package releasectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/mirror"
	"github.com/twinslot/twinslot/tools/progress"
)

// pairList is the repeatable --pair flag.
type pairList []mirror.Pair

func (l *pairList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

func (l *pairList) Set(v string) error {
	p, err := mirror.ParsePair(v)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}

func (c *cmd) mirror(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl mirror", "--upstream URL --pair app/channel/board[=localchannel] ... [--interval D] [--once] [--dir DIR]",
		`Follow an upstream Omaha server and republish what it offers on this omahad (--server).
For each --pair it checks in upstream as a synthetic host (version 0.0.0, a machine id kept in
DIR) on the upstream channel and board; when a version the local channel does not carry is
offered, it downloads the package files (in parallel, resuming cut downloads), checks each
against the offered size, SHA-256 and SHA-1, keeps them in DIR and publishes them to the local
channel (default: the upstream channel's name). Nothing is published when a check fails.
The local app must exist: with the upstream's trust root for twinslot payloads; Flatcar (CrAU)
payloads and their extra files become Flatcar packages. --app is not used: pairs name their app.
Without --once it runs until interrupted: a round every --interval (jittered ±10%), sooner
after a failed round (capped, jittered backoff). --json prints one JSON status object per line;
--status-file keeps counters and per-pair state as JSON.`)
	k := c.connFlags(fs, true)
	var pairs pairList
	fs.Var(&pairs, "pair", "app/channel/board[=localchannel] to follow (repeatable)")
	upstream := fs.String("upstream", "", "upstream Omaha endpoint, e.g. https://public.update.flatcar-linux.net/v1/update/")
	interval := fs.Duration("interval", mirror.DefaultInterval, "time between rounds")
	once := fs.Bool("once", false, "run one round and exit (non-zero when a pair failed)")
	dir := fs.String("dir", "/var/lib/twinslot/mirror", "directory for the machine id, partial and verified downloads")
	workers := fs.Int("workers", mirror.DefaultWorkers, "files downloaded at once")
	attempts := fs.Int("attempts", mirror.DefaultAttempts, "tries of a check and of a download per round")
	backoff := fs.Duration("backoff", mirror.DefaultMinBackoff, "first wait after a failure (doubles up to --max-backoff, jittered)")
	maxBackoff := fs.Duration("max-backoff", mirror.DefaultMaxBackoff, "longest wait after failures")
	stall := fs.Duration("stall", mirror.DefaultStall, "drop and resume a download that received nothing for this long")
	statusFile := fs.String("status-file", "", "write counters and per-pair state here as JSON after each step")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	switch {
	case *upstream == "":
		return cli.Usagef("--upstream URL is required")
	case len(pairs) == 0:
		return cli.Usagef("give at least one --pair app/channel/board[=localchannel]")
	case *interval <= 0 || *workers <= 0 || *attempts <= 0 || *backoff <= 0 || *maxBackoff <= 0 || *stall <= 0:
		return cli.Usagef("--interval, --workers, --attempts, --backoff, --max-backoff and --stall must be positive")
	}
	cl, _, err := c.client(k)
	if err != nil {
		return err
	}
	out := &mirrorOutput{w: stdio.Stdout, errw: stdio.Stderr, json: k.json, tty: cli.IsTerminal(stdio.Stderr), now: c.env.Now, statusFile: *statusFile}
	m, err := mirror.New(mirror.Config{
		Upstream: *upstream, Pairs: pairs, Dir: *dir, Local: mirror.AdminLocal{Client: cl},
		Interval: *interval, Workers: *workers, Attempts: *attempts, MinBackoff: *backoff, MaxBackoff: *maxBackoff, Stall: *stall,
		HTTP: c.env.HTTP, Now: c.env.Now, Report: out.event,
	})
	if err != nil {
		return err
	}
	out.stats = m.Stats
	defer out.finish()
	if *once {
		err := m.Once(ctx)
		if err != nil {
			return fmt.Errorf("mirror: %w", err)
		}
		return nil
	}
	if err := m.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// mirrorOutput shows a mirror's events: lines and a progress bar for people, JSON lines for
// scripts, and the status file.
type mirrorOutput struct {
	mu         sync.Mutex
	w, errw    io.Writer
	json, tty  bool
	now        func() time.Time
	statusFile string
	stats      func() mirror.Stats
	bar        *progress.Bar
	lastJSON   time.Time
}

func (o *mirrorOutput) event(ev mirror.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ev.Phase == mirror.PhaseDownload {
		if o.json {
			// At most one progress line a second for scripts, and the last one.
			if ev.Done < ev.Total && ev.Time.Sub(o.lastJSON) < time.Second {
				return
			}
			o.lastJSON = ev.Time
			o.printJSON(ev)
			return
		}
		if o.bar == nil {
			o.bar = progress.New(o.errw, o.tty, "download "+ev.Version, ev.Total, o.now)
		}
		extra := ""
		if ev.Resumed > 0 {
			extra = "resumed " + progress.Bytes(ev.Resumed)
		}
		o.bar.Set(ev.Done, extra)
		return
	}
	if o.bar != nil {
		o.bar.Finish()
		o.bar = nil
	}
	if o.json {
		o.printJSON(ev)
	} else {
		fmt.Fprintf(o.w, "%s %s\n", ev.Time.UTC().Format(time.RFC3339), ev.Message)
	}
	if !o.json && ev.Phase == mirror.PhaseOffer {
		// The bar starts with the download, so its rate counts from there.
		o.bar = progress.New(o.errw, o.tty, "download "+ev.Version, ev.Total, o.now)
	}
	o.writeStatus()
}

func (o *mirrorOutput) printJSON(ev mirror.Event) {
	b, _ := json.Marshal(ev)
	o.w.Write(append(b, '\n'))
}

// writeStatus replaces the status file (temp file, rename) with the current counters.
func (o *mirrorOutput) writeStatus() {
	if o.statusFile == "" || o.stats == nil {
		return
	}
	b, err := json.MarshalIndent(o.stats(), "", "  ")
	if err == nil {
		tmp := o.statusFile + ".tmp"
		if err = os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			err = os.Rename(tmp, o.statusFile)
		}
	}
	if err != nil {
		fmt.Fprintf(o.errw, "releasectl mirror: status file %s: %v\n", filepath.Clean(o.statusFile), err)
	}
}

func (o *mirrorOutput) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bar != nil {
		o.bar.Finish()
		o.bar = nil
	}
	o.writeStatus()
}
