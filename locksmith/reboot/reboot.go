package reboot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
	"github.com/twinslot/twinslot/locksmith/window"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// Updated is the update agent as the daemon sees it. UpdatedOverDBus is the real one.
type Updated interface {
	// Subscribe starts delivering the agent's signals. Signals sent after it returns are not
	// lost, so a caller subscribes first and then reads the current status. The channel is
	// closed when ctx ends or the connection is lost.
	Subscribe(ctx context.Context) (<-chan dbusapi.Signal, error)
	GetStatus(ctx context.Context) (dbusapi.Status, error)
	GetBootStatus(ctx context.Context) (dbusapi.BootStatus, error)
}

// Rebooter reboots the host. LogindRebooter is the real one; a fleet simulation injects one
// that emulates the boot loader.
type Rebooter interface {
	// BlockingInhibitors describes whatever blocks a reboot now (empty: nothing).
	BlockingInhibitors(ctx context.Context) ([]string, error)
	// Reboot starts the reboot and returns the refusal if the host will not reboot.
	Reboot(ctx context.Context) error
}

// Clock is the daemon's time. RealClock is the real one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// DrainFailure says what happens when the drain hook fails or times out.
type DrainFailure string

const (
	// DrainRelease gives the slot back and retries later (kured's way).
	DrainRelease DrainFailure = "release"
	// DrainProceed reboots anyway (FLUO's way).
	DrainProceed DrainFailure = "proceed"
)

// Config is what the daemon does.
type Config struct {
	// Strategy is one of updateconf.StrategyReboot, StrategyEtcdLock, StrategyFleetLock, StrategyOff.
	Strategy string
	// Group is the semaphore group (etcd-lock; FleetLock clients carry their own).
	Group string
	// MachineID is this host's holder id; BootID identifies this boot; Hostname is informative.
	MachineID, BootID, Hostname string
	// Windows are the reboot windows (zero value: any time).
	Windows window.Schedule

	// DrainTimeout bounds the drain hook (default 10m); DrainFailure picks what a failure does.
	DrainTimeout time.Duration
	DrainFailure DrainFailure
	// InhibitMaxWait bounds how long block inhibitors postpone a reboot (default 10m; then the
	// daemon reboots anyway and says so). InhibitRecheck is how often they are re-read (1m).
	InhibitMaxWait, InhibitRecheck time.Duration
	// RetryBase and RetryMax bound the jittered exponential backoff after errors (5s, 5m).
	RetryBase, RetryMax time.Duration
	// FleetLockPoll is how often a full FleetLock group is asked again (1m; HTTP has no watch).
	FleetLockPoll time.Duration
	// OpTimeout bounds one etcd, FleetLock or D-Bus call (default 15s).
	OpTimeout time.Duration

	// RebootRequiredPath is touched when a reboot is needed (kured's sentinel); "" skips it.
	RebootRequiredPath string
	// StatusPath and CoordinatorPath receive the status (see package doc); "" skips each.
	StatusPath, CoordinatorPath string
	// StateDir keeps the FleetLock reboot record (fleetlock strategy only).
	StateDir string
}

// Deps are the host's services.
type Deps struct {
	Updated   Updated
	Rebooter  Rebooter
	Store     *locksmith.Store  // etcd-lock
	FleetLock *fleetlock.Client // fleetlock
	// Drain runs before the reboot, with DrainTimeout; nil means no drain hook.
	Drain func(ctx context.Context) error
	Clock Clock
	Log   *slog.Logger
}

// Daemon is one locksmithd.
type Daemon struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	upd     dbusapi.Status
	boot    dbusapi.BootStatus
	changed chan struct{} // closed and replaced when upd or boot changes
	signals int           // signals applied so far
	lost    chan struct{} // closed when the agent's signals stop

	stMu     sync.Mutex
	st       Status
	stChange chan struct{}

	lock       locker
	releaseDue bool // a release failed; retried at the next pass
	retries    int
}

// New checks cfg against deps and returns a daemon.
func New(cfg Config, deps Deps) (*Daemon, error) {
	switch cfg.Strategy {
	case updateconf.StrategyReboot, updateconf.StrategyOff:
	case updateconf.StrategyEtcdLock:
		if deps.Store == nil {
			return nil, errors.New("daemon: strategy etcd-lock needs etcd endpoints")
		}
	case updateconf.StrategyFleetLock:
		if deps.FleetLock == nil || cfg.StateDir == "" {
			return nil, errors.New("daemon: strategy fleetlock needs a FleetLock URL and a state directory")
		}
	default:
		return nil, fmt.Errorf("daemon: unknown strategy %q (reboot, etcd-lock, fleetlock, off)", cfg.Strategy)
	}
	if deps.Updated == nil {
		return nil, errors.New("daemon: no connection to the update agent")
	}
	if cfg.Strategy != updateconf.StrategyOff && deps.Rebooter == nil {
		return nil, errors.New("daemon: no way to reboot (logind)")
	}
	if cfg.Strategy == updateconf.StrategyEtcdLock {
		if err := locksmith.ValidateID(cfg.MachineID); err != nil {
			return nil, fmt.Errorf("daemon: machine id: %w", err)
		}
	}
	if cfg.Group == "" {
		cfg.Group = locksmith.DefaultGroup
	}
	if err := locksmith.ValidateGroup(cfg.Group); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if cfg.Windows.Loc == nil {
		cfg.Windows.Loc = time.Local
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.DrainTimeout, 10*time.Minute)
	def(&cfg.InhibitMaxWait, 10*time.Minute)
	def(&cfg.InhibitRecheck, time.Minute)
	def(&cfg.RetryBase, 5*time.Second)
	def(&cfg.RetryMax, 5*time.Minute)
	def(&cfg.FleetLockPoll, time.Minute)
	def(&cfg.OpTimeout, 15*time.Second)
	if cfg.DrainFailure == "" {
		cfg.DrainFailure = DrainRelease
	}
	if cfg.DrainFailure != DrainRelease && cfg.DrainFailure != DrainProceed {
		return nil, fmt.Errorf("daemon: drain failure policy %q is not release or proceed", cfg.DrainFailure)
	}
	if deps.Clock == nil {
		deps.Clock = RealClock{}
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, deps: deps, changed: make(chan struct{}), lost: make(chan struct{}), stChange: make(chan struct{})}
	d.log = deps.Log.With("strategy", cfg.Strategy, "group", cfg.Group)
	d.lock = d.newLocker()
	d.st = Status{Version: statusVersion, State: StateStarting, Strategy: cfg.Strategy, Group: cfg.Group, Since: deps.Clock.Now()}
	return d, nil
}

// errLost is returned by Run when the update agent's signals stop (the bus went away).
var errLost = errors.New("daemon: lost the connection to the update agent; restarting is the fix")

// Run follows the update agent until ctx ends. It returns an error only when the connection to
// the agent is lost.
func (d *Daemon) Run(ctx context.Context) error {
	d.publish(StateStarting, "connecting to the update agent", nil)
	if err := d.connect(ctx); err != nil {
		return d.exit(ctx, err)
	}
	if d.cfg.Strategy == updateconf.StrategyEtcdLock || d.cfg.Strategy == updateconf.StrategyFleetLock {
		cont, err := d.settle(ctx)
		if err != nil {
			return err
		}
		if cont {
			if err := d.rebootFlow(ctx); err != nil {
				return d.exit(ctx, err)
			}
		}
	}
	for {
		if err := d.waitNeedReboot(ctx); err != nil {
			return d.exit(ctx, err)
		}
		if d.cfg.Strategy == updateconf.StrategyOff {
			d.publish(StateDisabled, "reboot needed; strategy off: not rebooting (kured or an operator may)", nil)
			if err := d.waitChange(ctx, func() bool { return !d.needReboot() }); err != nil {
				return d.exit(ctx, err)
			}
			continue
		}
		if err := d.rebootFlow(ctx); err != nil {
			return d.exit(ctx, err)
		}
	}
}

func (d *Daemon) exit(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// connect subscribes to the agent, then reads its state, retrying until it answers. Signals
// are applied as they come from the moment of subscribing; a read is kept only if no signal
// arrived while it was in flight (else it might be older than the signal), and retried.
func (d *Daemon) connect(ctx context.Context) error {
	for {
		sig, err := d.deps.Updated.Subscribe(ctx)
		if err == nil {
			go d.pump(ctx, sig)
			break
		}
		if err := d.backoff(ctx, StateStarting, "cannot subscribe to the update agent's signals", err); err != nil {
			return err
		}
	}
	for {
		d.mu.Lock()
		seen := d.signals
		d.mu.Unlock()
		opCtx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
		st, err := d.deps.Updated.GetStatus(opCtx)
		var boot dbusapi.BootStatus
		if err == nil {
			boot, err = d.deps.Updated.GetBootStatus(opCtx)
		}
		cancel()
		if err == nil {
			d.mu.Lock()
			fresh := d.signals == seen
			if fresh {
				d.upd, d.boot = st, boot
			}
			d.mu.Unlock()
			if !fresh {
				continue
			}
			d.retries = 0
			d.log.Info("following the update agent", "operation", st.CurrentOperation, "boot", boot.State, "booted_version", boot.BootedVersion)
			if d.cfg.Strategy == updateconf.StrategyOff {
				d.publish(StateDisabled, "strategy off: never rebooting", nil)
			}
			return nil
		}
		select {
		case <-d.lost:
			return errLost
		default:
		}
		if err := d.backoff(ctx, StateStarting, "update agent not reachable over D-Bus", err); err != nil {
			return err
		}
	}
}

// pump applies the agent's signals.
func (d *Daemon) pump(ctx context.Context, sig <-chan dbusapi.Signal) {
	defer func() {
		if ctx.Err() == nil {
			d.log.Error("update agent signals stopped")
		}
		d.mu.Lock()
		close(d.lost)
		d.mu.Unlock()
	}()
	for s := range sig {
		d.mu.Lock()
		if s.Status != nil {
			d.upd = *s.Status
		}
		if s.Boot != nil {
			d.boot = *s.Boot
		}
		d.signals++
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

func (d *Daemon) snapshot() (dbusapi.Status, dbusapi.BootStatus, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upd, d.boot, d.changed
}

func (d *Daemon) needReboot() bool {
	st, _, _ := d.snapshot()
	return st.CurrentOperation == dbusapi.OpUpdatedNeedReboot
}

// waitChange blocks until cond holds, re-checking it whenever the agent reports a change.
func (d *Daemon) waitChange(ctx context.Context, cond func() bool) error {
	for {
		_, _, ch := d.snapshot()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.lost:
			return errLost
		case <-ch:
		}
	}
}

func (d *Daemon) waitNeedReboot(ctx context.Context) error {
	if !d.needReboot() && d.cfg.Strategy != updateconf.StrategyOff {
		d.publishIdle()
	}
	if err := d.waitChange(ctx, d.needReboot); err != nil {
		return err
	}
	st, _, _ := d.snapshot()
	d.log.Info("update installed; reboot needed", "new_version", st.NewVersion)
	d.touchRebootRequired()
	return nil
}

// publishIdle keeps a rolled-back or unexpected-version status visible while idle.
func (d *Daemon) publishIdle() {
	if s := d.Status().State; s == StateRolledBack || s == StateUnexpectedVersion {
		return
	}
	d.publish(StateIdle, "no reboot needed", nil)
}

func (d *Daemon) touchRebootRequired() {
	p := d.cfg.RebootRequiredPath
	if p == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		d.log.Warn("cannot create the directory of the reboot sentinel", "path", p, "err", err)
		return
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		d.log.Warn("cannot touch the reboot sentinel", "path", p, "err", err)
		return
	}
	f.Close()
	now := d.deps.Clock.Now()
	os.Chtimes(p, now, now)
}

// backoff publishes a retryable failure and sleeps a jittered, capped, exponential delay.
func (d *Daemon) backoff(ctx context.Context, state State, what string, err error) error {
	d.retries++
	delay := d.cfg.RetryBase << min(d.retries-1, 20)
	if delay > d.cfg.RetryMax || delay <= 0 {
		delay = d.cfg.RetryMax
	}
	delay = jitter(delay)
	next := d.deps.Clock.Now().Add(delay)
	timer := d.deps.Clock.After(delay) // armed before the status says so: tests move a fake clock on it
	d.publish(state, fmt.Sprintf("%s: %v; retry %d at %s", what, err, d.retries, next.Format(time.RFC3339)), func(s *Status) {
		s.Attempts, s.NextAttempt, s.LastError = d.retries, next, err.Error()
	})
	if state == StateRebootFailed {
		d.log.Error(what, "err", err, "retry_in", delay.Round(time.Millisecond))
	} else {
		d.log.Warn(what, "err", err, "retry_in", delay.Round(time.Millisecond))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer:
		return nil
	}
}

// jitter spreads d over ±20% so hosts that failed together do not retry together.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (d *Daemon) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.OpTimeout)
}

func (d *Daemon) holder() locksmith.Holder {
	st, boot, _ := d.snapshot()
	return locksmith.Holder{ID: d.cfg.MachineID, BootID: d.cfg.BootID, Hostname: d.cfg.Hostname,
		FromVersion: boot.BootedVersion, ToVersion: st.NewVersion}
}

func describeInhibitors(in []string) string { return strings.Join(in, "; ") }
