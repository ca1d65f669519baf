package updated

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/updated/clock"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/floor"
)

// Config tunes an Agent. The zero value is a host's defaults.
type Config struct {
	// Schedule of update checks; zero: DefaultSchedule.
	Schedule Schedule
	// HealthDeadline bounds the health gate (update.conf HEALTH_TIMEOUT overrides); 0: 5 min.
	HealthDeadline time.Duration
	// HealthRetry is the pause between health check rounds; 0: 5 s.
	HealthRetry time.Duration
	// RebootTimeout is how long the agent waits to be stopped after a reboot was accepted
	// before it asks again; 0: 10 min.
	RebootTimeout time.Duration
	// AppID is the Omaha app id; "": payload.DefaultAppID.
	AppID string
	// PCR receives the booted image's digest; 0: floor.DefaultPCR.
	PCR int
	// Watchdog is systemd's WatchdogSec (from WATCHDOG_USEC); 0: no watchdog pings.
	Watchdog time.Duration
	// Bus, when set, is where the D-Bus API (com.coreos.update1) is exported.
	Bus *dbus.Conn
	// Logger; nil: discard.
	Logger *slog.Logger
	// OnPersist, when set, runs after each transition was persisted and before the new state's
	// side effects; an error stops Run with that error. The fleet simulation uses it to crash
	// hosts at chosen points; tests use it to record the chain of states.
	OnPersist func(Record) error
	// OnStatus and OnBootStatus, when set, see every status change (as the D-Bus signals do),
	// for in-process watchers such as the fleet simulation.
	OnStatus     func(dbusapi.Status)
	OnBootStatus func(dbusapi.BootStatus)
	// Install tunes payload installs (parallel requests, retries); Trust, Expect, Progress,
	// Logger, Now and BeforeWrite are set by the agent.
	Install payload.InstallOptions

	// gpt, when set, wraps the disk the agent changes the GPT through; tests make its writes
	// fail (export_test.go).
	gpt func(*partition.Disk) gptWriter
}

// Agent is the update agent of one host.
type Agent struct {
	h     Host
	c     Config
	log   *slog.Logger
	store Store
	clk   Clock
	rnd   Rand
	floor floor.Multi

	// AttemptUpdate and ResetStatus leave one pending request here: the Seq of the record
	// (the state) they were accepted in. A request applies only in that same state; the agent
	// drops one that outlived it (accepted in IDLE just as the agent left it for a check, say).
	trigger chan uint64
	reset   chan uint64

	pubMu    sync.Mutex // serialises publish, so signals keep their order
	mu       sync.Mutex // guards the fields below, read by D-Bus calls
	rec      Record
	progress float64
	srv      *dbusapi.Server
	lastSent dbusapi.Status
	lastBoot dbusapi.BootStatus
	sentAt   time.Time

	// Owned by the Run goroutine.
	booted      partition.Slot
	release     Release
	nextCheck   time.Time
	poll        time.Duration
	interactive bool
}

// Defaults.
const (
	DefaultRebootTimeout = 10 * time.Minute
	// progressStep and progressEvery throttle StatusUpdate signals while downloading, as
	// update_engine does (≥ 1 % or ≥ 10 s).
	progressStep  = 0.01
	progressEvery = 10 * time.Second
	// FloorFile is the floor file's name in the state directory.
	FloorFile = "floor.json"
	// measuredFile records the boot in which the booted image was extended into the PCR.
	measuredFile = "measured-boot"
)

// New returns an agent for h. It does no I/O; Run does.
func New(h Host, c Config) (*Agent, error) {
	switch {
	case h.Disk == nil || h.Boot == nil:
		return nil, errors.New("updated: Host needs Disk and Boot")
	case h.Reboot == nil:
		return nil, errors.New("updated: Host needs a Reboot action")
	case h.Paths.StateDir == "":
		return nil, errors.New("updated: Host needs Paths.StateDir")
	case h.BootID == "" || h.MachineID == "":
		return nil, errors.New("updated: Host needs a machine id and a boot id")
	}
	if c.Schedule == (Schedule{}) {
		c.Schedule = DefaultSchedule()
	}
	if c.RebootTimeout <= 0 {
		c.RebootTimeout = DefaultRebootTimeout
	}
	if c.AppID == "" {
		c.AppID = payload.DefaultAppID
	}
	if c.PCR == 0 {
		c.PCR = floor.DefaultPCR
	}
	a := &Agent{
		h: h, c: c, log: c.Logger, store: Store{Dir: h.Paths.StateDir},
		clk: h.Clock, rnd: h.Rand,
		trigger: make(chan uint64, 1), reset: make(chan uint64, 1),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.clk == nil {
		a.clk = clock.Real{}
		if a.h.Uptime == nil {
			a.h.Uptime = bootTime
		}
	}
	if a.h.Uptime == nil {
		clk := a.clk
		a.h.Uptime = func() time.Duration { return clk.Now().Sub(time.Unix(0, 0)) }
	}
	if a.rnd == nil {
		a.rnd = func(n int64) int64 { return rand.Int64N(n) }
	}
	if a.h.HTTP == nil {
		// One client for the agent's life, shared by Omaha exchanges and payload downloads, so
		// connections are reused and closed when Run ends.
		a.h.HTTP = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
		}}
	}
	a.floor = floor.Multi{floor.File{Path: filepath.Join(h.Paths.StateDir, FloorFile)}}
	if h.TPM != nil {
		a.floor = append(floor.Multi{&floor.TPM{T: h.TPM}}, a.floor...)
	}
	return a, nil
}

// errStop ends Run without an error (the context ended).
var errStop = errors.New("stopped")

// Run runs the agent until ctx ends: it classifies the boot (Resume), exports the D-Bus API,
// then drives the state machine. It returns nil when ctx ends, and an error when the host
// cannot be inspected (no disk, unknown booted slot), the state cannot be persisted, or
// OnPersist stopped it.
func (a *Agent) Run(ctx context.Context) error {
	defer a.h.HTTP.CloseIdleConnections()
	if err := os.MkdirAll(a.h.Paths.StateDir, 0o755); err != nil {
		return fmt.Errorf("updated: create state directory: %w", err)
	}
	rec, err := a.store.Load()
	if errors.Is(err, ErrCorruptState) {
		moved, merr := a.store.MoveAside(a.clk.Now())
		a.log.Error("state file unusable; starting afresh from the GPT", "error", err, "moved_to", moved, "move_error", merr)
		rec, err = NewRecord(), merr
	}
	if err != nil {
		return err
	}
	facts, err := a.inspect(ctx, rec)
	if err != nil {
		return err
	}
	resumed := Resume(rec, facts)
	a.log.Info("agent starting", "boot_id", a.h.BootID, "slot", facts.Slot, "version", facts.Version,
		"successful", facts.Successful, "recorded_state", rec.State, "state", resumed.State, "boot_status", resumed.Boot.State)
	if err := a.persist(resumed); err != nil {
		return err
	}
	a.nextCheck = a.clk.Now().Add(a.c.Schedule.FirstCheck(a.rnd))
	if resumed.Boot.State == BootSteady || resumed.Boot.State == BootCommitted {
		a.commitHousekeeping(ctx, resumed)
	}

	if a.c.Bus != nil {
		srv, err := dbusapi.Export(a.c.Bus, a)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.srv = srv
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			a.srv = nil
			a.mu.Unlock()
			srv.Close()
		}()
	}
	a.publish(true)
	a.notify("READY=1\nSTATUS=" + resumed.State.Operation())
	if a.c.Watchdog > 0 && a.h.Notify != nil {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go a.watchdog(wctx)
	}

	for {
		rec := a.record()
		ev, err := a.step(ctx, rec)
		if ctx.Err() != nil || errors.Is(err, errStop) {
			a.notify("STOPPING=1")
			return nil
		}
		if err != nil {
			return err
		}
		if ev.Now.IsZero() {
			ev.Now = a.clk.Now()
		}
		next, err := Transition(rec, ev)
		if err != nil {
			return fmt.Errorf("updated: %w (this is a bug)", err)
		}
		a.log.Info("transition", "from", rec.State, "event", ev.Kind.String(), "to", next.State, "seq", next.Seq)
		if err := a.persist(next); err != nil {
			return err
		}
	}
}

// persist saves r, makes it current, publishes it and runs the OnPersist hook.
func (a *Agent) persist(r Record) error {
	if err := a.store.Save(r); err != nil {
		return err
	}
	a.mu.Lock()
	a.rec = r
	if r.State != Downloading {
		a.progress = 0
	}
	a.mu.Unlock()
	a.publish(false)
	a.notify("STATUS=" + r.State.Operation())
	if a.c.OnPersist != nil {
		if err := a.c.OnPersist(r); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) record() Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rec.clone()
}

func (a *Agent) notify(s string) {
	if a.h.Notify != nil {
		if err := a.h.Notify(s); err != nil {
			a.log.Warn("sd_notify failed", "error", err)
		}
	}
}

func (a *Agent) watchdog(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.clk.After(a.c.Watchdog / 2):
			a.notify("WATCHDOG=1")
		}
	}
}

// inspect reads the boot facts: the booted slot, its release and bits, and whether the
// recorded attempt's target slot was tried by the boot loader.
func (a *Agent) inspect(ctx context.Context, rec Record) (BootFacts, error) {
	d, err := a.h.Disk.OpenDisk()
	if err != nil {
		return BootFacts{}, fmt.Errorf("updated: open the disk: %w", err)
	}
	defer d.Close()
	slot, rel, err := a.h.Boot.Booted(ctx, d)
	if err != nil {
		return BootFacts{}, fmt.Errorf("updated: find the booted slot: %w", err)
	}
	a.booted, a.release = slot, rel
	f := BootFacts{BootID: a.h.BootID, Slot: slot.Label, Version: rel.Version, Successful: slot.Attr.Successful(), Now: a.clk.Now(),
		Uptime: a.h.Uptime()}
	if rec.Attempt != nil && rec.Attempt.TargetSlot != "" && rec.Attempt.TargetSlot != slot.Label {
		if t, err := d.SlotByLabel(rec.Attempt.TargetSlot); err == nil {
			f.TargetTried = t.Attr.Priority() > 0 && t.Attr.Tries() == 0 && !t.Attr.Successful()
		}
	}
	return f, nil
}

// step performs the side effects of r.State and returns what happened.
func (a *Agent) step(ctx context.Context, r Record) (Event, error) {
	switch r.State {
	case Idle:
		return a.idle(ctx, r)
	case CheckingForUpdate:
		return a.check(ctx, r)
	case UpdateAvailable:
		return a.startDownload(ctx, r)
	case Downloading:
		return a.download(ctx, r)
	case Finalizing:
		return a.finalize(ctx, r)
	case UpdatedNeedReboot:
		return a.needReboot(ctx, r)
	case Resetting:
		return a.undoInstall(ctx, r)
	case ReportingErrorEvent:
		return a.reportError(ctx, r)
	case Verifying:
		return a.verify(ctx, r)
	case Committing:
		return a.commit(ctx, r)
	case RollingBack:
		return a.rollBack(ctx, r)
	}
	return Event{}, fmt.Errorf("updated: no handler for state %s", r.State)
}

func failed(code int, format string, args ...any) Event {
	return Event{Kind: EvFailed, Failure: &Failure{Code: code, Message: fmt.Sprintf(format, args...)}}
}

// wait blocks until d passed, a request for the current state arrived on one of chans, or ctx
// ended. It returns the index of the channel that fired, -1 for the timer. Requests accepted in
// an earlier state are dropped.
func (a *Agent) wait(ctx context.Context, d time.Duration, chans ...chan uint64) (int, error) {
	var c0, c1 chan uint64
	if len(chans) > 0 {
		c0 = chans[0]
	}
	if len(chans) > 1 {
		c1 = chans[1]
	}
	timer := a.clk.After(max(d, 0))
	for {
		var i int
		var seq uint64
		select {
		case <-ctx.Done():
			return 0, errStop
		case <-timer:
			return -1, nil
		case seq = <-c0:
		case seq = <-c1:
			i = 1
		}
		if seq == a.record().Seq {
			return i, nil
		}
	}
}

// request leaves seq as the one pending request on ch, replacing an older one. Callers hold a.mu,
// so requests do not interleave.
func request(ch chan uint64, seq uint64) {
	for {
		select {
		case ch <- seq:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}
