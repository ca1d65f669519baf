package demo

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/fleet"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/payloadcmd"
	"github.com/twinslot/twinslot/tools/releasectl"
)

const help = `Runs a whole twinslot rollout on this machine, in one process, with nothing but Go: an update
server (omahad on SQLite), an embedded etcd, and N simulated hosts, each with its own disk image
running the real update agent and the real locksmithd.

1. 1.0.1 is built, signed with a key made for this run, published to alpha and promoted to
   stable: every host installs it, reboots when it gets one of the --max reboot slots, proves the
   new boot healthy and commits it.
2. A broken 1.0.2 goes out under "one update per hour, halt on the first failure": the one host
   that takes it fails the health gate, rolls back to 1.0.1, keeps its reboot slot, and the
   server halts the group. Nobody else gets 1.0.2.

The exit status is 0 only when that is exactly what happened.`

// Flag defaults.
const (
	DefaultHosts   = 6
	DefaultMax     = 2
	DefaultTimeout = 3 * time.Minute
	maxHosts       = 50
	// group is the hosts' group on the server and in etcd.
	group = "stable"
	// ratePeriod is the v1.0.2 phase's rate window (one update per period, "--period 1h").
	ratePeriod = time.Hour
	// moreChecks is how many update checks every host makes after the halt before the demo
	// ends, to show nobody else gets the broken version.
	moreChecks = 2
)

type options struct {
	hosts, max int
	dir        string
	json       bool
	timeout    time.Duration
	timings    fleet.Timings
}

// Main is the demo command line (testimages/cmd/demo); it returns the exit status: 0 when the
// rollout went as expected, 1 when it did not or something failed, 2 for a bad command line.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	stdio := cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	fs := stdio.FlagSet("demo", "[--hosts N] [--max N] [--dir D] [--json]", help)
	var o options
	fs.IntVar(&o.hosts, "hosts", DefaultHosts, "number of simulated hosts")
	fs.IntVar(&o.max, "max", DefaultMax, "how many hosts may reboot at once (locksmith max)")
	fs.StringVar(&o.dir, "dir", "", "keep every file (disks, database, payloads, logs) in this directory; default: a temporary one, removed")
	fs.BoolVar(&o.json, "json", false, "print the final table as JSON on stdout (the live view goes to stderr)")
	fs.DurationVar(&o.timeout, "timeout", DefaultTimeout, "give up after this long")
	fs.DurationVar(&o.timings.CheckInterval, "check-interval", fleet.DefaultCheckInterval, "hosts' update check period")
	fs.DurationVar(&o.timings.HealthTimeout, "health-timeout", 2*time.Second, "deadline of a new boot's health gate")
	fs.DurationVar(&o.timings.RebootDuration, "reboot-time", fleet.DefaultRebootDuration, "how long a reboot takes")
	rest, err := cli.Parse(fs, args)
	if err == nil {
		err = cli.NArgs(rest, 0, 0, "no arguments")
	}
	if err == nil {
		err = o.check()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "demo: %v\nRun 'demo --help' for usage.\n", err)
		return 2
	}
	d := &demo{o: o, stdout: stdout, out: stdout}
	if o.json {
		d.out = stderr
	}
	ok, err := d.run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

func (o *options) check() error {
	switch {
	case o.hosts < 2 || o.hosts > maxHosts:
		return cli.Usagef("--hosts %d: give 2 to %d", o.hosts, maxHosts)
	case o.max < 1 || o.max >= o.hosts:
		return cli.Usagef("--max %d: give 1 to hosts-1 (%d), so a rollout has to wait for slots", o.max, o.hosts-1)
	case o.timeout <= 0 || o.timings.CheckInterval <= 0 || o.timings.HealthTimeout <= 0 || o.timings.RebootDuration <= 0:
		return cli.Usagef("durations must be positive")
	}
	return nil
}

// demo is one run.
type demo struct {
	o      options
	stdout io.Writer // the final table (JSON with --json)
	out    io.Writer // everything for people
	dir    string
	clk    fleet.Clock // the update server's clock
	start  time.Time

	serverURL, token string
	admin            *admin.Client
	view             *view
}

func (d *demo) say(format string, args ...any) {
	if d.view != nil {
		d.view.note(fmt.Sprintf(format, args...))
		return
	}
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) section(title string) {
	d.say("\n== %s  (%s)", title, time.Since(d.start).Round(100*time.Millisecond))
}

// run plays the scenario; ok reports whether the outcome was the expected one.
func (d *demo) run(ctx context.Context) (ok bool, err error) {
	d.start = time.Now()
	ctx, cancel := context.WithTimeout(ctx, d.o.timeout)
	defer cancel()
	if d.dir = d.o.dir; d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "twinslot-demo-"); err != nil {
			return false, err
		}
		defer os.RemoveAll(d.dir)
	} else if err := emptyDir(d.dir); err != nil {
		return false, err
	}
	logf, err := os.Create(filepath.Join(d.dir, "demo.log"))
	if err != nil {
		return false, err
	}
	defer logf.Close()
	log := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fmt.Fprintf(d.out, "twinslot demo: %d hosts, at most %d rebooting at once; files in %s\n", d.o.hosts, d.o.max, d.dir)

	d.section("the update server and etcd")
	e, err := etcdtest.Start(filepath.Join(d.dir, "etcd"))
	if err != nil {
		return false, err
	}
	defer e.Stop()
	d.say("etcd (embedded) on %s", strings.Join(e.Endpoints, ","))
	stopServer, err := d.startServer(ctx, log)
	if err != nil {
		return false, err
	}
	defer stopServer()

	d.section("build the images")
	im, err := fleet.BuildImages(ctx, d.dir, func(s string) { d.say("building %s", s) })
	if err != nil {
		return false, err
	}

	d.section("sign and publish " + fleet.VersionGood)
	key, trustPath, err := d.makeKey(ctx)
	if err != nil {
		return false, err
	}
	good, err := d.buildPayload(ctx, im.Good, fleet.VersionGood, key)
	if err != nil {
		return false, err
	}
	if err := d.releasectl(ctx, "app", "create", "--name", "twinslot demo", "--trust", trustPath); err != nil {
		return false, err
	}
	if err := d.releasectl(ctx, "publish", "--channel", "alpha", good); err != nil {
		return false, err
	}
	if err := d.releasectl(ctx, "promote", "--version", fleet.VersionGood, "--from", "alpha", "--to", group); err != nil {
		return false, err
	}
	ls := locksmith.NewStore(e.Client, "", nil)
	if _, err := ls.SetMax(ctx, group, d.o.max); err != nil {
		return false, err
	}
	d.say("$ locksmithctl -group %s set-max %d   (the etcd reboot semaphore)", group, d.o.max)

	trust, err := readTrust(trustPath)
	if err != nil {
		return false, err
	}
	d.view = newView(d.out, d.o.max, d.start)
	f, err := fleet.New(ctx, fleet.Config{
		Hosts: d.o.hosts, Dir: filepath.Join(d.dir, "hosts"), Disk: im.Disk, Server: d.serverURL + "/v1/update/",
		Group: group, Trust: trust, Etcd: e.Client, Timings: d.o.timings, Logger: log, OnEvent: d.view.event,
	})
	if err != nil {
		return false, err
	}
	d.view.fleet = f
	fctx, stopFleet := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- f.Run(fctx) }()
	stopView := d.view.start(ctx)
	stop := func() error {
		stopFleet()
		err := <-runErr
		stopView()
		d.view = nil
		return err
	}
	defer func() {
		if d.view != nil {
			stop()
		}
	}()

	d.section(fmt.Sprintf("%d hosts on %s, group %s: every host takes %s, %d at a time", d.o.hosts, fleet.VersionBase, group, fleet.VersionGood, d.o.max))
	if _, err := f.Wait(ctx, allOn(fleet.VersionGood)); err != nil {
		return false, fmt.Errorf("waiting for %s on every host: %w", fleet.VersionGood, err)
	}

	d.section("a broken " + fleet.VersionBroken + " goes out")
	if err := d.releasectl(ctx, "group", "update", group, "--max-updates", "1", "--period", "1h", "--halt-on-failures", "1"); err != nil {
		return false, err
	}
	d.clk.Advance(ratePeriod + time.Minute)
	d.say("(simulation: the server's clock jumps an hour ahead, so %s's grants leave the rate window)", fleet.VersionGood)
	broken, err := d.buildPayload(ctx, im.Broken, fleet.VersionBroken, key)
	if err != nil {
		return false, err
	}
	if err := d.releasectl(ctx, "publish", "--channel", "alpha", broken); err != nil {
		return false, err
	}
	if err := d.releasectl(ctx, "promote", "--version", fleet.VersionBroken, "--from", "alpha", "--to", group); err != nil {
		return false, err
	}
	st, err := f.Wait(ctx, someoneRolledBack)
	if err != nil {
		return false, fmt.Errorf("waiting for a host to roll back from %s: %w", fleet.VersionBroken, err)
	}
	g, err := d.waitHalted(ctx)
	if err != nil {
		return false, err
	}
	d.say("server: group %s HALTED: %s", group, g.Policy.HaltedReason)
	d.say("every host checks in %d more times: nobody else is offered %s", moreChecks, fleet.VersionBroken)
	checks := map[string]int{}
	for _, h := range st.Hosts {
		checks[h.Name] = h.Checks
	}
	if _, err := f.Wait(ctx, func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if h.Checks < checks[h.Name]+moreChecks || h.Operation != "idle" {
				return false
			}
		}
		return true
	}); err != nil {
		return false, fmt.Errorf("waiting for the hosts to check in: %w", err)
	}
	final := f.State()
	v := d.view
	if err := stop(); err != nil {
		return false, err
	}
	final = withCommitted(f, final)

	d.section("the end")
	r := newReport(final, g, d.o.max, v)
	if d.o.json {
		if err := cli.PrintJSON(d.stdout, r); err != nil {
			return false, err
		}
	}
	r.print(d.out)
	fmt.Fprintf(d.out, "\nverdict: %s (%s)\n", r.Verdict, time.Since(d.start).Round(100*time.Millisecond))
	if r.OK {
		if id := r.rolledBackID(); id != "" {
			fmt.Fprintf(d.out, "an operator would now investigate, then: locksmithctl -group %s unlock --force %s; releasectl group resume %s\n", group, id, group)
		}
	}
	return r.OK, nil
}

// startServer starts omahad (package server) on SQLite, on 127.0.0.1:0, and an admin token.
func (d *demo) startServer(ctx context.Context, log *slog.Logger) (stop func(), err error) {
	dbPath := filepath.Join(d.dir, "omahad.db")
	db, err := store.Open(ctx, dbPath)
	if err != nil {
		return nil, err
	}
	srv, err := server.New(ctx, server.Config{DB: db, StoreDir: filepath.Join(d.dir, "payloads"), Logger: log.With("component", "omahad"), Now: d.clk.Now})
	if err != nil {
		db.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close(ctx)
		db.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln, 5*time.Second) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			log.Warn("omahad stopped", "error", err)
		}
		db.Close()
	}
	d.serverURL = "http://" + ln.Addr().String()
	if d.token, _, err = db.CreateToken(ctx, store.RoleAdmin, "demo", time.Now()); err != nil {
		stop()
		return nil, err
	}
	if d.admin, err = admin.NewClient(d.serverURL, d.token, nil); err != nil {
		stop()
		return nil, err
	}
	d.say("omahad on %s (SQLite %s); an admin token was created for releasectl", d.serverURL, dbPath)
	return stop, nil
}

// makeKey makes the run's signing key and the hosts' trust root with the payload command.
func (d *demo) makeKey(ctx context.Context) (key, trust string, err error) {
	base := filepath.Join(d.dir, "demo-key")
	trust = filepath.Join(d.dir, "trust.json")
	d.say("a signing key made for this run only (a demo key: never ship one like it)")
	if err := d.payload(ctx, "keygen", "-o", base); err != nil {
		return "", "", err
	}
	if err := d.payload(ctx, "trust", "init", "--key", base+".pub", "-o", trust); err != nil {
		return "", "", err
	}
	return base + ".key", trust, nil
}

// buildPayload builds and signs the payload of a /usr image.
func (d *demo) buildPayload(ctx context.Context, usr, version, key string) (string, error) {
	p := filepath.Join(d.dir, version+".tsp")
	if err := d.payload(ctx, "build", "--image", usr, "--version", version, "--board", testimages.DefaultBoard,
		"--security-version", "1", "-o", p); err != nil {
		return "", err
	}
	return p, d.payload(ctx, "sign", "--key", key, p)
}

func (d *demo) payload(ctx context.Context, args ...string) error {
	return d.tool(ctx, "payload", func(stdout, stderr io.Writer) int {
		return payloadcmd.Main(ctx, args, nil, stdout, stderr)
	}, args)
}

func (d *demo) releasectl(ctx context.Context, args ...string) error {
	return d.tool(ctx, "releasectl", func(stdout, stderr io.Writer) int {
		return releasectl.Env{Server: d.serverURL, Token: d.token}.Main(ctx, args, nil, stdout, stderr)
	}, args)
}

// tool runs a command in-process, shows it and its output (paths shortened), and fails when it
// does.
func (d *demo) tool(_ context.Context, name string, run func(stdout, stderr io.Writer) int, args []string) error {
	short := func(s string) string { return strings.ReplaceAll(s, d.dir+string(filepath.Separator), "") }
	var shown []string
	for _, a := range args {
		if strings.ContainsAny(a, " \t") {
			a = "'" + a + "'"
		}
		shown = append(shown, short(a))
	}
	d.say("$ %s %s", name, strings.Join(shown, " "))
	var out, errOut bytes.Buffer
	code := run(&out, &errOut)
	for line := range strings.Lines(strings.TrimSpace(short(out.String()))) {
		d.say("  %s", strings.TrimRight(line, "\n"))
	}
	if code != 0 {
		return fmt.Errorf("%s %s failed (exit %d): %s", name, strings.Join(args, " "), code, strings.TrimSpace(errOut.String()))
	}
	return nil
}

// emptyDir makes dir, or checks that it is empty: a run starts from nothing (a fresh database,
// fresh etcd, a new key).
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("--dir %s is not empty: give a new or empty directory", dir)
	}
	return nil
}

func readTrust(path string) (*payload.TrustRoot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return payload.ParseTrustRoot(b)
}

// waitHalted waits until the server shows the group halted (the failure report is written in
// the background, a moment after the host sent it).
func (d *demo) waitHalted(ctx context.Context) (admin.Group, error) {
	for {
		g, err := d.admin.Group(ctx, payload.DefaultAppID, group)
		if err != nil {
			return g, err
		}
		if g.Policy.HaltedReason != "" {
			return g, nil
		}
		select {
		case <-ctx.Done():
			return g, fmt.Errorf("the server never halted group %s: %w", group, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allOn: every host runs version, committed, and no reboot slot is held.
func allOn(version string) func(fleet.State) bool {
	return func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if h.Version != version || !h.Committed || h.Operation != "idle" {
				return false
			}
		}
		return len(s.Holders) == 0
	}
}

// someoneRolledBack: a host is back on its old version, idle, and its locksmithd keeps the slot.
func someoneRolledBack(s fleet.State) bool {
	for _, h := range s.Hosts {
		if h.BootState == "rolled-back" && h.Operation == "idle" && h.Lock == "rolled-back" {
			sl, ok := s.Holder(h.MachineID)
			return ok && sl.Holder.State == locksmith.HolderRolledBack
		}
	}
	return false
}

// withCommitted re-reads every host's booted slot from its disk, so the final table shows the
// GPT's word, not the last event's.
func withCommitted(f *fleet.Fleet, st fleet.State) fleet.State {
	for i, sh := range f.Hosts() {
		slot, rel, _ := sh.Booted()
		slots, err := sh.Slots()
		st.Hosts[i].Version, st.Hosts[i].Slot = rel.Version, slot.Label
		st.Hosts[i].Committed = err == nil && slots[slot.Label].Attr.Successful()
	}
	return st
}
