package omahaload

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twinslot/twinslot/tools/cli"
)

// Main is the omahaload command: `omahaload run --url URL [flags]`.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmds := []cli.Command{{
		Name:    "run",
		Summary: "drive simulated hosts against an Omaha server on loopback and report checks/s and latency",
		Run:     runCommand,
	}}
	return cli.Run(ctx, "omahaload", "load generator for Omaha update servers (loopback only)", cmds, args,
		cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

func runCommand(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahaload run", "--url URL [flags]",
		"Sends update checks, events and pings from --machines simulated hosts to URL (a loopback\n"+
			"address) until --requests were sent or --duration passed, then prints checks/s, latency\n"+
			"percentiles and errors. The first round is one update check per host.")
	var cfg Config
	fs.StringVar(&cfg.URL, "url", "", "update endpoint, e.g. http://127.0.0.1:8080/v1/update/ (required)")
	fs.IntVar(&cfg.Machines, "machines", 1000, "simulated hosts")
	fs.IntVar(&cfg.Requests, "requests", 0, "total requests (default: one per host)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "time limit (default 1m)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 32, "requests in flight")
	fs.Float64Var(&cfg.Rate, "rate", 0, "requests per second on a fixed schedule (0: as fast as possible)")
	fs.StringVar(&cfg.AppID, "app", DefaultAppID, "Omaha app id the hosts report")
	fs.StringVar(&cfg.Board, "board", "amd64-usr", "board the hosts report")
	tracks := fs.String("tracks", "stable,beta,alpha", "comma-separated tracks, assigned round robin")
	versions := fs.String("versions", "1.0.0,1.1.0,1.2.0", "comma-separated running versions, assigned round robin")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed for machine ids and the request mix")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, ""); err != nil {
		return err
	}
	if cfg.URL == "" {
		return cli.Usagef("--url is required")
	}
	cfg.Tracks = strings.Split(*tracks, ",")
	cfg.Versions = strings.Split(*versions, ",")
	total := cfg.Requests
	if total == 0 {
		total = cfg.Machines
	}
	var done int64
	show := progressLine(stdio.Stderr, cli.IsTerminal(stdio.Stderr), int64(total))
	cfg.Progress = func(n int64) { done = n; show(n) }
	res, err := Run(ctx, cfg)
	if done < int64(total) {
		show(-1) // ended early (time limit or interrupt): end the line
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, res)
	}
	if err := res.WriteText(stdio.Stdout); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// progressLine returns a Config.Progress that prints "requests done/total" to w: redrawn in
// place on a terminal, one line every logEvery otherwise (tools/progress counts bytes). A
// negative done ends the line without a count.
func progressLine(w io.Writer, tty bool, total int64) func(int64) {
	const logEvery = 5 * time.Second
	start := time.Now()
	var last time.Time
	return func(done int64) {
		if done < 0 {
			if tty {
				fmt.Fprintln(w)
			}
			return
		}
		now := time.Now()
		final := done >= total
		if !tty && !final && now.Sub(last) < logEvery {
			return
		}
		last = now
		rate := float64(done) / max(now.Sub(start).Seconds(), 1e-9)
		line := fmt.Sprintf("requests %d/%d (%.0f/s)", done, total, rate)
		switch {
		case tty && final:
			fmt.Fprintf(w, "\r\033[K%s\n", line)
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", line)
		default:
			fmt.Fprintln(w, line)
		}
	}
}
