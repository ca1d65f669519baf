package locksmithd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
	"github.com/twinslot/twinslot/locksmith/internal/etcdflags"
	"github.com/twinslot/twinslot/locksmith/internal/hostenv"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/locksmith/window"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated/updateconf"
)

const (
	prog = "locksmithd"
	// EnvPrefix is the prefix of the environment variables that set flags.
	EnvPrefix = "LOCKSMITHD_"
	// BootIDPath identifies the current boot.
	BootIDPath = "/proc/sys/kernel/random/boot_id"
)

type options struct {
	etcd            etcdflags.Flags
	group, id       string
	fleetlockListen string
	metricsListen   string
	staleAfter      time.Duration
	fleetlockURL    string
	configs         string
	drainCommand    string
	drainTimeout    time.Duration
	drainFailure    string
	statusFile      string
	coordinatorFile string
	rebootRequired  string
	stateDir        string
	debug           bool
}

// Env is what locksmithd takes from its surroundings: the process environment (LOCKSMITHD_* flags, REBOOT_STRATEGY and the window keys, DBUS_SYSTEM_BUS_ADDRESS),
// which the binary passes as os.Environ().
type Env struct{ Environ []string }

// Main is locksmithd's command line with an empty environment (Env{}.Main).
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is locksmithd's command line with env's environment (see Run).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, args, env.Environ, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Run is Main with the environment given. It returns 0 on a clean stop, 1 on failure, 2 on a
// bad command line. A flag comes from the command line, else from LOCKSMITHD_<FLAG> in environ,
// else from LOCKSMITHD_<FLAG> in the update.conf files (Flatcar's locksmithd.service reads
// /etc/flatcar/update.conf as its EnvironmentFile, so LOCKSMITHD_ENDPOINT may be set there).
func Run(ctx context.Context, args, environ []string, stdio cli.IO) int {
	stderr := stdio.Stderr
	o := options{}
	fs := stdio.FlagSet(prog, "[flags]", "Coordinates reboots after updates: follows updated over D-Bus and reboots when the strategy,\nthe reboot windows and (etcd-lock, fleetlock) a reboot slot allow. REBOOT_STRATEGY and the\nwindows come from the update.conf files (a later file wins key by key) and the environment;\nevery flag is also LOCKSMITHD_<FLAG>, in the environment or in update.conf.")
	o.etcd.Register(fs)
	fs.StringVar(&o.group, "group", locksmith.DefaultGroup, "reboot group (etcd-lock and fleetlock)")
	fs.StringVar(&o.id, "id", "", "machine id used as the holder id (default: the content of "+hostenv.MachineIDPath+")")
	fs.StringVar(&o.fleetlockListen, "fleetlock-listen", "", "serve the FleetLock protocol on this address (host:port) from the etcd semaphore")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address (host:port) at /metrics")
	fs.DurationVar(&o.staleAfter, "stale-after", locksmith.DefaultStaleAfter, "metrics flag a holder not seen for longer than this as stale (0: never); nothing is freed on its own")
	fs.StringVar(&o.fleetlockURL, "fleetlock-url", "", "FleetLock server for REBOOT_STRATEGY=fleetlock")
	fs.StringVar(&o.configs, "config", strings.Join(updateconf.DefaultPaths(), ","), "update.conf files, comma-separated, a later file winning key by key")
	fs.StringVar(&o.drainCommand, "drain-command", "", "shell command run before rebooting (with the slot held), e.g. to drain a node")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Minute, "how long the drain command may run")
	fs.StringVar(&o.drainFailure, "drain-failure", string(reboot.DrainRelease), "when the drain fails: release (give the slot back, retry later) or proceed (reboot anyway)")
	fs.StringVar(&o.statusFile, "status-file", "/run/locksmithd/status.json", "where the current status is written (empty: nowhere)")
	fs.StringVar(&o.coordinatorFile, "coordinator-file", "/run/update-engine/coordinator.conf", "CoreOS coordinator.conf to keep up to date (empty: none)")
	fs.StringVar(&o.rebootRequired, "reboot-required-file", "/run/reboot-required", "touched when an update needs a reboot, for kured (empty: never)")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/locksmithd", "directory for the FleetLock reboot record")
	fs.BoolVar(&o.debug, "debug", false, "log debug messages")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cli.NArgs(pos, 0, 0, "no arguments")
	}
	if err == nil {
		err = etcdflags.SetFromEnv(fs, EnvPrefix, environ)
	}
	var conf *updateconf.Config
	if err == nil {
		// A bad update.conf is a failure (1), not a usage error.
		if conf, err = updateconf.LoadEnv(environ, splitList(o.configs)...); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return 1
		}
		err = etcdflags.SetFromEnv(fs, EnvPrefix, confEnviron(conf))
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for usage.\n", prog, err, prog)
		return 2
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := run(ctx, o, conf, environ, log); err != nil {
		log.Error("locksmithd stopped", "err", err)
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	return 0
}

// confEnviron is the LOCKSMITHD_* keys of the update.conf files as KEY=VALUE entries.
func confEnviron(c *updateconf.Config) []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(c.Values)) {
		if strings.HasPrefix(k, EnvPrefix) {
			env = append(env, k+"="+c.Values[k])
		}
	}
	return env
}

func run(ctx context.Context, o options, conf *updateconf.Config, environ []string, log *slog.Logger) error {
	var err error
	loc := time.Local
	if conf.RebootWindowTZ != "" {
		if loc, err = time.LoadLocation(conf.RebootWindowTZ); err != nil {
			return fmt.Errorf("REBOOT_WINDOW_TZ=%q is not an IANA time zone: %w", conf.RebootWindowTZ, err)
		}
	}
	windows, err := window.ParseSchedule(conf.RebootWindowStart, conf.RebootWindowLength, loc)
	if err != nil {
		return err
	}
	strategy := conf.RebootStrategy
	serve := o.fleetlockListen != ""

	var store *locksmith.Store
	if strategy == updateconf.StrategyEtcdLock || serve {
		cli, err := o.etcd.Client()
		if err != nil {
			return err
		}
		defer cli.Close()
		store = locksmith.NewStore(cli, "", nil)
	}
	var fl *fleetlock.Client
	if strategy == updateconf.StrategyFleetLock {
		if o.fleetlockURL == "" {
			return errors.New("REBOOT_STRATEGY=fleetlock needs --fleetlock-url (or LOCKSMITHD_FLEETLOCK_URL)")
		}
		fl = &fleetlock.Client{BaseURL: o.fleetlockURL, Group: o.group, HTTP: &http.Client{Timeout: 5 * time.Minute}}
	}

	conn, busErr := hostenv.SystemBus(environ)
	if busErr == nil {
		defer conn.Close()
	}
	var d *reboot.Daemon
	switch {
	case busErr != nil && strategy != updateconf.StrategyOff:
		return fmt.Errorf("connect to the system bus (updated and logind live there): %w", busErr)
	case busErr != nil && serve:
		log.Warn("strategy off and no system bus: serving FleetLock only", "err", busErr)
	case busErr != nil:
		log.Info("strategy off and no system bus: nothing to do", "err", busErr)
		return nil
	default:
		cfg := reboot.Config{
			Strategy: strategy, Group: o.group, Windows: windows,
			DrainTimeout: o.drainTimeout, DrainFailure: reboot.DrainFailure(o.drainFailure),
			RebootRequiredPath: o.rebootRequired, StatusPath: o.statusFile, CoordinatorPath: o.coordinatorFile, StateDir: o.stateDir,
		}
		if strategy != updateconf.StrategyOff && strategy != updateconf.StrategyReboot {
			if cfg.MachineID, err = hostenv.MachineID(o.id); err != nil {
				return err
			}
			b, err := os.ReadFile(BootIDPath)
			if err != nil {
				return fmt.Errorf("read the boot id: %w", err)
			}
			cfg.BootID = strings.TrimSpace(string(b))
			cfg.Hostname, _ = os.Hostname()
		}
		if fl != nil {
			fl.ID = cfg.MachineID
		}
		deps := reboot.Deps{Updated: reboot.UpdatedOverDBus(conn), Rebooter: reboot.LogindRebooter(conn),
			Store: store, FleetLock: fl, Log: log}
		if o.drainCommand != "" {
			deps.Drain = drainHook(o.drainCommand, log)
		}
		if d, err = reboot.New(cfg, deps); err != nil {
			return err
		}
		log.Info("locksmithd starting", "strategy", strategy, "group", cfg.Group, "windows", windows.String(), "machine_id", cfg.MachineID)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	var requests *prometheus.CounterVec
	if serve {
		requests = newFleetLockRequests()
		h := promhttp.InstrumentHandlerCounter(requests, fleetlock.NewServer(store, log))
		if err := serveHTTP(ctx, cancel, &wg, errs, o.fleetlockListen, h, "FleetLock", log); err != nil {
			return err
		}
	}
	if o.metricsListen != "" {
		c := &collector{store: store, group: o.group, windows: windows, staleAfter: o.staleAfter, d: d, ctx: ctx}
		if err := serveHTTP(ctx, cancel, &wg, errs, o.metricsListen, metricsHandler(c, requests), "metrics", log); err != nil {
			return err
		}
	}
	if d != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.Run(ctx); err != nil {
				errs <- err
			}
			cancel()
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// serveHTTP serves h on addr until ctx ends; a server failure cancels the whole reboot.
func serveHTTP(ctx context.Context, cancel context.CancelFunc, wg *sync.WaitGroup, errs chan<- error, addr string, h http.Handler, name string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for %s on %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
	log.Info("serving "+name, "addr", ln.Addr().String())
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("%s server: %w", name, err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer scancel()
		srv.Shutdown(sctx)
	}()
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// drainHook runs command with /bin/sh in its own process group, killed as a group when the
// daemon's timeout or shutdown cancels it; its output goes to the log.
func drainHook(command string, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		var out tail
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if len(out.b) > 0 {
			log.Info("drain command output", "output", strings.TrimSpace(string(out.b)))
		}
		if err != nil {
			return fmt.Errorf("drain command %q: %w", command, err)
		}
		return nil
	}
}

// maxDrainOutput bounds how much of the drain command's output is kept for the log.
const maxDrainOutput = 16 << 10

// tail keeps the last maxDrainOutput bytes written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > maxDrainOutput {
		t.b = append([]byte(nil), t.b[len(t.b)-maxDrainOutput:]...)
	}
	return len(p), nil
}
