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
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/esp"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/updated/clock"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/floor"
	"github.com/twinslot/twinslot/updated/updateconf"
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
	f := BootFacts{BootID: a.h.BootID, Slot: slot.Label, Version: rel.Version, Successful: slot.Attr.Successful(), Now: a.clk.Now()}
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

// conf reads update.conf (re-read at every check, as update_engine does).
func (a *Agent) conf() (*updateconf.Config, error) {
	return updateconf.LoadEnv(a.h.Paths.Environ, a.h.Paths.Config...)
}

// servers splits SERVER into URLs (several, separated by spaces or commas, fail over in order).
func servers(c *updateconf.Config) []string {
	return strings.FieldsFunc(c.Server, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
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

// checksDisabled re-reads update.conf and reports whether checks are off (or it is unreadable).
func (a *Agent) checksDisabled() bool {
	c, err := a.conf()
	if err != nil {
		a.log.Error("cannot read update.conf; not checking for updates until it is fixed", "error", err)
	}
	return c == nil || c.Disabled() || len(servers(c)) == 0
}

func (a *Agent) idle(ctx context.Context, r Record) (Event, error) {
	for {
		disabled := a.checksDisabled()
		d := a.nextCheck.Sub(a.clk.Now())
		if r.Failures == 0 && (r.Rollback != nil || (r.PrevVersionPref != "" && r.PrevVersionPref != "0.0.0.0")) {
			d = 0 // a commit or a rollback waits to be reported (unless the server is failing)
		}
		if disabled {
			d = a.c.Schedule.Period // re-read update.conf now and then
		}
		i, err := a.wait(ctx, d, a.trigger, a.reset)
		if err != nil {
			return Event{}, err
		}
		if i != 1 {
			disabled = a.checksDisabled() // update.conf may have changed while waiting
		}
		switch {
		case i == 1:
			return Event{Kind: EvReset}, nil
		case disabled:
			if i == 0 {
				a.log.Warn("update check asked for, but updates are disabled (SERVER in update.conf is empty or \"disabled\")")
			}
			continue
		default:
			a.interactive = i == 0
			return Event{Kind: EvCheckDue}, nil
		}
	}
}

// identity is the Omaha host identity.
func (a *Agent) identity(c *updateconf.Config, r Record) omaha.Host {
	return omaha.Host{
		AppID: a.c.AppID, MachineID: a.h.MachineID, BootID: a.h.BootID,
		Version: a.release.Version, Track: c.Group, Board: a.release.Board,
		OEM: a.release.OEM, OEMVersion: a.release.OEMVersion,
		AlephVersion: r.AlephVersion, MachineAlias: c.MachineAlias,
	}
}

// withConfigOrigin adds to a server's "no such group" answer which update.conf set GROUP, so
// the operator sees what to fix and where ("the server knows no group "nightly" … (GROUP=nightly
// in /etc/flatcar/update.conf)").
func withConfigOrigin(err error, c *updateconf.Config) error {
	var ug *omaha.UnknownGroupError
	if !errors.As(err, &ug) {
		return err
	}
	if o, ok := c.Origin("GROUP"); ok {
		return fmt.Errorf("%w (%s=%s in %s)", err, o.Key, c.Group, o.File)
	}
	return fmt.Errorf("%w (GROUP is not set in any update.conf; the default is %s)", err, c.Group)
}

func (a *Agent) client(c *updateconf.Config) (*omaha.Client, error) {
	return omaha.NewClient(servers(c), omaha.ClientOptions{HTTPClient: a.h.HTTP})
}

func (a *Agent) check(ctx context.Context, r Record) (Event, error) {
	interactive := a.interactive
	a.interactive = false
	c, err := a.conf()
	if err != nil {
		a.scheduleAfterFailure(r)
		return failed(CodeError, "read update.conf: %v", err), nil
	}
	cl, err := a.client(c)
	if err != nil {
		a.scheduleAfterFailure(r)
		return failed(CodeError, "%v", err), nil
	}
	opt := omaha.CheckOptions{PreviousVersion: r.PrevVersionPref, Rollback: r.Rollback != nil, Interactive: interactive}
	res, err := cl.UpdateCheck(ctx, a.identity(c, r), opt)
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	if err != nil {
		a.scheduleAfterFailure(r)
		code := CodeError
		var oe *omaha.Error
		if errors.As(err, &oe) {
			code = int(oe.Code())
		}
		err = withConfigOrigin(err, c)
		a.log.Warn("update check failed", "error", err, "code", code, "next_check_in", a.nextCheck.Sub(a.clk.Now()).Round(time.Second))
		return failed(code, "%v", err), nil
	}
	a.poll = res.PollInterval
	a.nextCheck = a.clk.Now().Add(a.c.Schedule.NextCheck(0, a.poll, a.rnd))
	u := res.Update
	if u == nil {
		a.log.Info("no update", "server", res.Server, "version", a.release.Version, "next_check_in", a.nextCheck.Sub(a.clk.Now()).Round(time.Second))
		return Event{Kind: EvNoUpdate, Delivered: true}, nil
	}
	if u.Version == a.release.Version {
		a.log.Warn("the server offered the version already running; ignoring it", "version", u.Version)
		return Event{Kind: EvNoUpdate, Delivered: true}, nil
	}
	if r.IsBad(u.Version) {
		// Reported as update_engine's "ignored per policy" (sent with result 9, deferred).
		a.scheduleAfterFailure(r)
		ev := failed(int(omaha.ErrorCodeOmahaUpdateIgnoredPerPolicy),
			"version %s failed on this host before; not installing it again (updatectl reset clears this)", u.Version)
		ev.Delivered = true
		return ev, nil
	}
	o := &Offer{Version: u.Version, URLs: u.DownloadURLs(), Name: u.PackageName, Size: u.Size,
		SHA256: fmt.Sprintf("%x", u.SHA256)}
	a.log.Info("update available", "version", o.Version, "size", o.Size, "urls", o.URLs)
	return Event{Kind: EvUpdateFound, Offer: o, BootedVersion: a.release.Version, Delivered: true}, nil
}

func (a *Agent) scheduleAfterFailure(r Record) {
	a.nextCheck = a.clk.Now().Add(a.c.Schedule.NextCheck(r.Failures+1, 0, a.rnd))
}

// event sends an Omaha event, best effort (update_engine does not judge event replies).
func (a *Agent) event(ctx context.Context, r Record, ev omaha.Event) {
	c, err := a.conf()
	if err == nil {
		var cl *omaha.Client
		if cl, err = a.client(c); err == nil {
			err = cl.Event(ctx, a.identity(c, r), ev)
		}
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("could not report an event to the update server", "type", int(ev.Type), "result", int(ev.Result),
			"code", int(ev.ErrorCode), "error", err)
	}
}

func (a *Agent) openDisk() (*partition.Disk, partition.Slot, error) {
	d, err := a.h.Disk.OpenDisk()
	if err != nil {
		return nil, partition.Slot{}, err
	}
	booted, err := d.SlotByLabel(a.booted.Label)
	if err != nil {
		d.Close()
		return nil, partition.Slot{}, err
	}
	return d, booted, nil
}

// target is the slot to write: the partner of the booted slot, which must be committed (so
// that whatever happens to the target, the booted slot still boots).
func (a *Agent) target(d *partition.Disk, booted partition.Slot) (partition.Slot, error) {
	if !booted.Attr.Successful() || booted.Attr.Priority() == 0 {
		return partition.Slot{}, fmt.Errorf("the running slot %s is not committed (%v); refusing to write its partner", booted.Label, booted.Attr)
	}
	return d.Other(booted)
}

func (a *Agent) startDownload(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	t, err := a.target(d, booted)
	d.Close()
	if err != nil {
		return failed(CodeUnsafeBootState, "%v", err), nil
	}
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess})
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	return Event{Kind: EvDownloadStarted, Target: t.Label}, nil
}

// trustRoot loads the first trust root file that exists.
func (a *Agent) trustRoot() (*payload.TrustRoot, string, error) {
	for _, p := range a.h.Paths.TrustRoots {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		t, err := payload.LoadTrustRoot(p)
		if err != nil {
			return nil, p, err
		}
		return t, p, nil
	}
	return nil, "", fmt.Errorf("no trust root in %v: the host cannot verify payloads and refuses to install any", a.h.Paths.TrustRoots)
}

func (a *Agent) download(ctx context.Context, r Record) (Event, error) {
	att := r.Attempt
	if a.release.Board == "" {
		return failed(CodeWrongPayload, "the running /usr names no BOARD in its os-release, so the payload's board cannot be checked; refusing to install"), nil
	}
	trust, trustPath, err := a.trustRoot()
	if err != nil {
		return failed(CodePubKeyVerificationError, "%v", err), nil
	}
	fl, err := a.floor.Get(ctx)
	if err != nil {
		return failed(CodeBelowSecurityFloor, "read the security floor: %v", err), nil
	}
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	defer d.Close()
	t, err := a.target(d, booted)
	if err != nil {
		return failed(CodeUnsafeBootState, "%v", err), nil
	}
	if t.Label != att.TargetSlot {
		return failed(CodeUnsafeBootState, "the slot to write is now %s, not %s as when the download started", t.Label, att.TargetSlot), nil
	}
	cfg, _ := a.conf()
	o := a.c.Install
	o.Trust = trust
	o.Expect = payload.Expect{AppID: a.c.AppID, Board: a.release.Board, Floor: fl}
	o.Logger = a.log
	o.Now = a.clk.Now
	o.BeforeWrite = func() error { return d.BeginInstall(t) }
	o.Progress = func(p payload.Progress) {
		if p.Total > 0 {
			a.setProgress(float64(p.Done) / float64(p.Total))
		}
	}
	dst := payload.Target{
		Slot: d.SlotIO(t), Size: t.Size,
		Active: d.SlotReader(booted), ActiveSize: booted.Size,
	}
	a.log.Info("installing", "version", att.ToVersion, "target", t.Label, "trust_root", trustPath, "floor", fl)
	var res *payload.Result
	var lastErr error
	for _, u := range att.Offer.URLs {
		res, lastErr = payload.Install(ctx, payload.FromURL(u, a.downloadClient(cfg)), dst, o)
		if lastErr == nil || ctx.Err() != nil {
			break
		}
		a.log.Warn("install from this URL failed", "url", u, "error", lastErr)
	}
	if ctx.Err() != nil {
		return Event{}, errStop // resumed after the restart: the payload reuses what is written
	}
	if lastErr != nil {
		return failed(installCode(lastErr), "%v", lastErr), nil
	}
	m := res.Manifest
	if m.Version != att.ToVersion {
		// The slot holds a validly signed image, but not the one offered: never boot it.
		return failed(CodeWrongPayload, "the payload is version %s but the server offered %s; the slot is left unbootable", m.Version, att.ToVersion), nil
	}
	a.log.Info("installed", "version", m.Version, "target", t.Label, "reused", res.BytesReused(),
		"fetched", res.BytesFetched, "written", res.BytesWritten, "took", res.Duration.Round(time.Millisecond))
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateDownloadFinished, Result: omaha.EventResultSuccess})
	return Event{Kind: EvDownloaded, Image: &Image{
		Version: m.Version, SecurityVersion: m.SecurityVersion, SHA256: m.ImageSHA256.String(),
		Size: m.ImageSize, BytesReused: res.BytesReused(), BytesFetched: res.BytesFetched,
	}}, nil
}

// downloadClient adds DOWNLOAD_USER/DOWNLOAD_PASSWORD basic auth to payload requests.
func (a *Agent) downloadClient(c *updateconf.Config) *http.Client {
	base := a.h.HTTP
	if c == nil || c.DownloadUser == "" {
		return base
	}
	hc := &http.Client{}
	if base != nil {
		*hc = *base
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = basicAuth{rt: rt, user: c.DownloadUser, pass: c.DownloadPassword}
	return hc
}

type basicAuth struct {
	rt         http.RoundTripper
	user, pass string
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.pass)
	return b.rt.RoundTrip(r)
}

func (a *Agent) finalize(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	defer d.Close()
	t, err := d.SlotByLabel(r.Attempt.TargetSlot)
	if err != nil || t.Number == booted.Number {
		return failed(CodeUnsafeBootState, "target slot %s: not usable (booted %s): %v", r.Attempt.TargetSlot, booted.Label, err), nil
	}
	if err := a.installKernel(ctx, d, t); err != nil {
		if ctx.Err() != nil {
			return Event{}, errStop
		}
		return failed(CodeKernelInstall, "%v; %s is not made the next boot", err, t.Label), nil
	}
	if err := d.PrepareInstall(t); err != nil {
		return failed(CodePostinstallRunnerError, "make %s the next boot: %v", t.Label, err), nil
	}
	a.log.Info("the new slot boots next", "slot", t.Label, "version", r.Attempt.ToVersion)
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccess})
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	return Event{Kind: EvInstalled}, nil
}

// installKernel copies the kernel and initrd of the new slot t to its letter's files on the
// ESP, when the host boots from the ESP layout (partition/esp); elsewhere it does nothing.
func (a *Agent) installKernel(ctx context.Context, d *partition.Disk, t partition.Slot) error {
	dir := a.h.Paths.ESPDir
	if !esp.Present(dir) {
		return nil
	}
	if err := esp.InstallDisk(ctx, dir, d, t); err != nil {
		return err
	}
	a.log.Info("installed the new slot's kernel and initrd on the ESP", "dir", dir, "slot", t.Label)
	return nil
}

func (a *Agent) needReboot(ctx context.Context, r Record) (Event, error) {
	for {
		d := a.c.Schedule.NextCheck(0, a.poll, a.rnd)
		i, err := a.wait(ctx, d, a.reset, a.trigger)
		if err != nil {
			return Event{}, err
		}
		switch i {
		case 0:
			return Event{Kind: EvReset}, nil
		case 1:
			continue // AttemptUpdate is a no-op until the reboot
		}
		// A ping-only request keeps the server's count of active hosts right.
		c, err := a.conf()
		if err != nil || c.Disabled() || len(servers(c)) == 0 {
			continue
		}
		cl, err := a.client(c)
		if err == nil {
			err = cl.Ping(ctx, a.identity(c, r))
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("ping failed", "error", err)
		}
	}
}

func (a *Agent) undoInstall(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return Event{}, fmt.Errorf("updated: reset: open the disk: %w", err)
	}
	defer d.Close()
	if t, err := d.SlotByLabel(r.Attempt.TargetSlot); err == nil && t.Number != booted.Number && t.Attr.Priority() > 0 {
		if err := d.MarkBad(t); err != nil {
			return Event{}, fmt.Errorf("updated: reset: %w", err)
		}
		a.log.Info("cancelled the installed update; the running slot boots next", "cancelled_slot", t.Label)
	}
	return Event{Kind: EvResetDone}, nil
}

func (a *Agent) reportError(ctx context.Context, r Record) (Event, error) {
	if f := r.Failure; f != nil {
		a.log.Error("update failed", "step", f.Step, "code", f.Code, "error", f.Message)
		a.event(ctx, r, omaha.ErrorEvent(omaha.ErrorCode(f.Code)))
		if ctx.Err() != nil {
			return Event{}, errStop
		}
	}
	return Event{Kind: EvReported}, nil
}

func (a *Agent) setProgress(p float64) {
	a.mu.Lock()
	a.progress = p
	a.mu.Unlock()
	a.publish(false)
}

// Status is the Manager status tuple (dbusapi.Backend).
func (a *Agent) Status() dbusapi.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statusLocked()
}

func (a *Agent) statusLocked() dbusapi.Status {
	r := a.rec
	s := dbusapi.Status{CurrentOperation: r.State.Operation(), Progress: a.progress}
	if !r.LastChecked.IsZero() {
		s.LastCheckedTime = r.LastChecked.Unix()
	}
	if r.Attempt != nil && r.Attempt.Offer != nil {
		s.NewVersion, s.NewSize = r.Attempt.Offer.Version, r.Attempt.Offer.Size
	}
	if (r.State == Verifying || r.State == Committing) && r.Boot.BootedVersion != "" {
		s.NewVersion = r.Boot.BootedVersion // the version on trial: the health gate is running
	}
	if s.NewVersion == "" {
		s.NewVersion = dbusapi.NoVersion // update_engine's "no update known"
	}
	if r.State == UpdatedNeedReboot || r.State == Finalizing {
		s.Progress = 1
	}
	return s
}

// BootStatus is the current boot's status (dbusapi.Backend).
func (a *Agent) BootStatus() dbusapi.BootStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return dbusapi.BootStatus(a.rec.Boot)
}

// Record returns a copy of the current persisted record.
func (a *Agent) Record() Record { return a.record() }

// AttemptUpdate asks for an update check now; like update_engine it does nothing unless the
// agent is idle (dbusapi.Backend).
func (a *Agent) AttemptUpdate() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rec.State == Idle {
		request(a.trigger, a.rec.Seq)
	}
	return nil
}

// ResetStatus forgets failures, backoff and versions that failed on this host (IDLE) or cancels an installed update so the running
// slot boots next again (UPDATED_NEED_REBOOT); other states refuse (dbusapi.Backend).
func (a *Agent) ResetStatus() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.rec.State; st != Idle && st != UpdatedNeedReboot {
		return fmt.Errorf("ResetStatus works in IDLE or UPDATED_NEED_REBOOT, the agent is in %s: %w", st, dbusapi.ErrNotAllowed)
	}
	request(a.reset, a.rec.Seq)
	return nil
}

// publish sends StatusUpdate (throttled while downloading) and BootStatus when they changed.
func (a *Agent) publish(force bool) {
	a.pubMu.Lock()
	defer a.pubMu.Unlock()
	a.mu.Lock()
	st := a.statusLocked()
	boot := dbusapi.BootStatus(a.rec.Boot)
	now := a.clk.Now()
	sendStatus := force || st.CurrentOperation != a.lastSent.CurrentOperation || st.NewVersion != a.lastSent.NewVersion ||
		st.LastCheckedTime != a.lastSent.LastCheckedTime ||
		(st.Progress != a.lastSent.Progress && (st.Progress-a.lastSent.Progress >= progressStep || now.Sub(a.sentAt) >= progressEvery || st.Progress == 1))
	sendBoot := force || boot != a.lastBoot
	if sendStatus {
		a.lastSent, a.sentAt = st, now
	}
	if sendBoot {
		a.lastBoot = boot
	}
	srv := a.srv
	onStatus, onBoot := a.c.OnStatus, a.c.OnBootStatus
	a.mu.Unlock()
	if sendStatus {
		if srv != nil {
			if err := srv.EmitStatus(st); err != nil {
				a.log.Warn("D-Bus StatusUpdate failed", "error", err)
			}
		}
		if onStatus != nil {
			onStatus(st)
		}
	}
	if sendBoot {
		if srv != nil {
			if err := srv.EmitBootStatus(boot); err != nil {
				a.log.Warn("D-Bus BootStatus failed", "error", err)
			}
		}
		if onBoot != nil {
			onBoot(boot)
		}
	}
}
