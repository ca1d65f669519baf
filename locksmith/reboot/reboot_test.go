package reboot_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/locksmith/window"
	"github.com/twinslot/twinslot/updated/clock"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbusapi/dbusapitest"
	"github.com/twinslot/twinslot/updated/dbustest"
	"github.com/twinslot/twinslot/updated/sysd"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// guard bounds how long a test waits for something that should happen; it never decides a result.
const guard = 60 * time.Second

type harness struct {
	t       *testing.T
	etcd    *etcdtest.Etcd
	store   *locksmith.Store
	bus     *dbustest.Daemon
	updated *dbusapitest.Agent
	logind  *dbustest.Logind
	clock   *clock.Fake
	dir     string
}

func newHarness(t *testing.T, st dbusapi.Status, boot dbusapi.BootStatus) *harness {
	h := &harness{t: t, etcd: etcdtest.New(t), bus: dbustest.New(t), dir: t.TempDir(),
		clock: clock.NewFake(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC))} // a Monday
	h.store = locksmith.NewStore(h.etcd.Client, "", h.clock.Now)
	h.updated = dbusapitest.Export(t, h.bus.Conn(t), st, boot)
	h.logind = dbustest.ExportLogind(t, h.bus.Conn(t))
	return h
}

func (h *harness) config(bootID string) reboot.Config {
	return reboot.Config{
		Strategy: updateconf.StrategyEtcdLock, Group: "default", MachineID: "m1", BootID: bootID, Hostname: "host1",
		Windows:   window.Schedule{Loc: time.UTC},
		RetryBase: time.Second, RetryMax: 4 * time.Second, OpTimeout: 5 * time.Second,
		RebootRequiredPath: filepath.Join(h.dir, "run/reboot-required"),
		StatusPath:         filepath.Join(h.dir, "run/locksmithd/status.json"),
		CoordinatorPath:    filepath.Join(h.dir, "run/update-engine/coordinator.conf"),
		StateDir:           filepath.Join(h.dir, "var/lib/locksmithd"),
	}
}

func (h *harness) deps(store *locksmith.Store) reboot.Deps {
	conn := h.bus.Conn(h.t)
	return reboot.Deps{Updated: reboot.UpdatedOverDBus(conn), Rebooter: reboot.LogindRebooter(conn), Store: store,
		Clock: h.clock, Log: slog.New(slog.NewTextHandler(testWriter{h.t}, nil))}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type running struct {
	d    *reboot.Daemon
	stop func() error
}

// start runs a daemon; stop kills it (cancels its context) and returns Run's error.
func (h *harness) start(cfg reboot.Config, deps reboot.Deps) running {
	d, err := reboot.New(cfg, deps)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	h.t.Cleanup(func() { stop() })
	return running{d: d, stop: stop}
}

func waitState(t *testing.T, d *reboot.Daemon, want reboot.State) reboot.Status {
	t.Helper()
	return waitFor(t, d, string(want), func(st reboot.Status) bool { return st.State == want })
}

// waitFor waits until the daemon's status satisfies ok.
func waitFor(t *testing.T, d *reboot.Daemon, what string, ok func(reboot.Status) bool) reboot.Status {
	t.Helper()
	deadline := time.After(guard)
	for {
		ch := d.Changed()
		if st := d.Status(); ok(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("never reached: %s; last status %+v", what, d.Status())
		}
	}
}

func (h *harness) waitReboot() {
	h.t.Helper()
	select {
	case <-h.logind.Rebooted():
	case <-time.After(guard):
		h.t.Fatal("the daemon never asked logind to reboot")
	}
}

func (h *harness) noReboot() {
	h.t.Helper()
	if n := h.logind.Reboots(); n != 0 {
		h.t.Fatalf("%d reboots, want none", n)
	}
}

func (h *harness) slot(id string) (locksmith.Slot, bool) {
	h.t.Helper()
	st, err := h.store.State(h.t.Context(), "default")
	if err != nil {
		h.t.Fatal(err)
	}
	return st.Holding(id)
}

func TestRebootThenReleaseOnCommit(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootCommitted, "1.0"))
	r1 := h.start(h.config("boot-1"), h.deps(h.store))
	h.waitReboot()
	st := waitState(t, r1.d, reboot.StateRebooting)
	sl, ok := h.slot("m1")
	if !ok || !st.Holding || sl.Holder.State != locksmith.HolderRebooting || sl.Holder.BootID != "boot-1" ||
		sl.Holder.FromVersion != "1.0" || sl.Holder.ToVersion != "2.0" || sl.Holder.Hostname != "host1" {
		t.Fatalf("holder while rebooting: %+v (held %v)", sl.Holder, ok)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "run/reboot-required")); err != nil {
		t.Errorf("reboot sentinel for kured: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(h.dir, "run/update-engine/coordinator.conf")); !strings.Contains(string(b), "STATE=rebooting") {
		t.Errorf("coordinator.conf = %q", b)
	}
	if err := r1.stop(); err != nil {
		t.Fatal(err)
	}

	// The host comes back in the new version; the health gate is still running.
	h.updated.SetStatus(t, dbusapitest.Idle())
	h.updated.SetBoot(t, dbusapitest.Boot(reboot.BootVerifying, "2.0"))
	r2 := h.start(h.config("boot-2"), h.deps(h.store))
	waitState(t, r2.d, reboot.StateVerifying)
	if after, ok := h.slot("m1"); !ok {
		t.Fatal("slot released before the boot was committed")
	} else if after.ModRevision <= sl.ModRevision || after.Holder.SeenAt.IsZero() {
		t.Fatalf("the host found its slot after the boot but did not record that it is up (seen_at): %+v", after)
	}
	h.updated.SetBoot(t, dbusapitest.Boot(reboot.BootCommitted, "2.0"))
	waitState(t, r2.d, reboot.StateIdle)
	if _, ok := h.slot("m1"); ok {
		t.Fatal("slot kept after the commit")
	}
	if h.logind.Reboots() != 1 {
		t.Fatalf("%d reboots, want 1", h.logind.Reboots())
	}
}

// rebootIntoRollback takes host m1 through a reboot into 2.0 that rolled back to 1.0: after it,
// the agent reports the rolled-back boot and the next daemon starts on boot-2.
func rebootIntoRollback(t *testing.T) *harness {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootCommitted, "1.0"))
	r1 := h.start(h.config("boot-1"), h.deps(h.store))
	h.waitReboot()
	r1.stop()
	h.updated.SetStatus(t, dbusapitest.Idle())
	h.updated.SetBoot(t, dbusapi.BootStatus{State: reboot.BootRolledBack, BootedVersion: "1.0", PreviousVersion: "2.0", Slot: "USR-A"})
	return h
}

func TestRollbackKeepsSlot(t *testing.T) {
	h := rebootIntoRollback(t)
	r2 := h.start(h.config("boot-2"), h.deps(h.store))
	st := waitState(t, r2.d, reboot.StateRolledBack)
	if !st.Holding || !strings.Contains(st.Detail, "2.0 failed") {
		t.Fatalf("status %+v", st)
	}
	sl, ok := h.slot("m1")
	if !ok || sl.Holder.State != locksmith.HolderRolledBack || !strings.Contains(sl.Holder.Note, "rolled back") {
		t.Fatalf("holder after rollback: %+v (held %v)", sl.Holder, ok)
	}
	if _, err := h.store.TryLock(t.Context(), "default", locksmith.Holder{ID: "m2"}); !errors.Is(err, locksmith.ErrFull) {
		t.Fatalf("another host could lock after a rollback: %v", err)
	}
}

// A host that rolled back keeps its slot and the group stops: the host too, when a later update
// needs a reboot. Rebooting on the kept slot would erase the rolled-back mark and release the
// slot after the next commit, with nobody having looked at the failure.
func TestRolledBackHostRebootsOnlyAfterUnlock(t *testing.T) {
	h := rebootIntoRollback(t)
	cfg := h.config("boot-2")
	r2 := h.start(cfg, h.deps(h.store))
	waitState(t, r2.d, reboot.StateRolledBack)

	h.updated.SetStatus(t, dbusapitest.NeedReboot("3.0")) // the next update is installed
	st := waitFor(t, r2.d, "refusing to reboot into 3.0", func(st reboot.Status) bool {
		return st.State == reboot.StateRolledBack && strings.Contains(st.Detail, "reboot into 3.0 needed")
	})
	if !st.Holding || !strings.Contains(st.Detail, "locksmithctl unlock m1") {
		t.Fatalf("status %+v, want it to hold the slot and name the unlock command", st)
	}
	ch := r2.d.Changed()
	h.clock.Advance(2 * cfg.RetryMax) // a recheck: still kept, still no reboot
	select {
	case <-ch:
	case <-time.After(guard):
		t.Fatalf("no recheck of the kept slot: %+v", r2.d.Status())
	}
	if n := h.logind.Reboots(); n != 1 {
		t.Fatalf("%d reboots, want only the one into 2.0", n)
	}
	if sl, ok := h.slot("m1"); !ok || sl.Holder.State != locksmith.HolderRolledBack || sl.Holder.ToVersion != "2.0" {
		t.Fatalf("kept slot changed: %+v (held %v)", sl.Holder, ok)
	}

	// The operator has looked and frees the slot: the host takes a new one and reboots.
	if _, err := h.store.Unlock(t.Context(), "default", "m1", "m1", false); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(2 * cfg.RetryMax)
	h.waitReboot()
	if sl, ok := h.slot("m1"); !ok || sl.Holder.State != locksmith.HolderRebooting || sl.Holder.ToVersion != "3.0" {
		t.Fatalf("slot after the unlock: %+v (held %v)", sl.Holder, ok)
	}
}

func TestWindowGatesTheSlot(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	cfg := h.config("boot-1")
	var err error
	cfg.DrainTimeout = 3 * time.Hour
	cfg.Windows, err = window.ParseSchedule("mon 11:00", "1h", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	closeWindow := make(chan bool, 1)
	closeWindow <- true
	deps := h.deps(h.store)
	deps.Drain = func(ctx context.Context) error {
		if _, ok := h.slot("m1"); !ok {
			t.Error("drain hook ran without the slot")
		}
		select {
		case <-closeWindow: // the first drain takes so long that the window closes
			h.clock.Set(time.Date(2026, 3, 2, 12, 0, 1, 0, time.UTC))
		default:
		}
		return nil
	}
	r := h.start(cfg, deps)
	st := waitState(t, r.d, reboot.StateWaitingWindow)
	if _, ok := h.slot("m1"); ok || st.Holding {
		t.Fatal("slot taken outside the window")
	}
	h.clock.Set(time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC))
	// The window closes during the drain: release, no reboot, wait for next Monday.
	st = waitFor(t, r.d, "waiting for next Monday's window", func(st reboot.Status) bool {
		return st.State == reboot.StateWaitingWindow && strings.Contains(st.Detail, "2026-03-09")
	})
	if _, ok := h.slot("m1"); ok {
		t.Fatal("slot held outside the window")
	}
	h.noReboot()
	h.clock.Set(time.Date(2026, 3, 9, 11, 30, 0, 0, time.UTC))
	h.waitReboot()
}

// cutOffWindow is a Monday 10:00 window of an hour, and the moment it closes.
func cutOffWindow(t *testing.T, cfg *reboot.Config) time.Time {
	t.Helper()
	var err error
	if cfg.Windows, err = window.ParseSchedule("mon 10:00", "1h", time.UTC); err != nil {
		t.Fatal(err)
	}
	return time.Date(2026, 3, 2, 11, 0, 1, 0, time.UTC)
}

// waitNextWindowWithoutSlot waits until the daemon waits for next Monday's window, then checks
// it holds no slot meanwhile and did not reboot.
func (h *harness) waitNextWindowWithoutSlot(r running) {
	h.t.Helper()
	st := waitFor(h.t, r.d, "waiting for next Monday's window", func(st reboot.Status) bool {
		return st.State == reboot.StateWaitingWindow && strings.Contains(st.Detail, "2026-03-09")
	})
	h.noReboot()
	if sl, ok := h.slot("m1"); ok || st.Holding {
		h.t.Fatalf("waiting a week for the next window while holding slot %d in etcd (status holding %v)", sl.Index, st.Holding)
	}
}

// The slot transaction commits, but the window closes while its answer is on the way, so the
// caller sees a cancellation. The daemon must find and give back the slot before it waits for
// the next window, or the group stays blocked for a week (for good if the reboot is no longer
// needed).
func TestAcquireCutOffLeavesNoSlot(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	c := h.config("boot-1")
	windowEnd := cutOffWindow(t, &c)
	var armed atomic.Bool
	armed.Store(true)
	ecfg := h.etcd.ClientConfig(t)
	ecfg.DialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if tx, ok := req.(*etcdserverpb.TxnRequest); ok && err == nil && armed.Load() {
				for _, op := range tx.Success {
					if p := op.GetRequestPut(); p != nil && strings.Contains(string(p.Key), "/slots/") {
						armed.Store(false)
						h.clock.Set(windowEnd)
						<-ctx.Done()
						return ctx.Err() // committed, but the caller sees a cancellation
					}
				}
			}
			return err
		})}
	r := h.start(c, h.deps(locksmith.NewStore(h.etcd.Connect(t, ecfg), "", h.clock.Now)))
	h.waitNextWindowWithoutSlot(r)
	if armed.Load() {
		t.Fatal("the slot transaction was never cut off")
	}
}

// The same with FleetLock: the server takes the slot, but the client gives up on the answer
// when the window closes. steady-state (unlock-if-held) gives the slot back.
func TestFleetLockRequestCutOffLeavesNoSlot(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	c := h.config("boot-1")
	c.Strategy = updateconf.StrategyFleetLock
	windowEnd := cutOffWindow(t, &c)
	fl := fleetlock.NewServer(h.store, slog.New(slog.DiscardHandler))
	var armed atomic.Bool
	armed.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == fleetlock.PathPreReboot && armed.CompareAndSwap(true, false) {
			fl.ServeHTTP(httptest.NewRecorder(), r) // the slot is taken
			h.clock.Set(windowEnd)
			<-r.Context().Done() // the answer never leaves: the client hung up
			return
		}
		fl.ServeHTTP(w, r)
	}))
	defer srv.Close()
	deps := h.deps(nil)
	deps.FleetLock = &fleetlock.Client{BaseURL: srv.URL, ID: "m1", Group: "default"}
	r := h.start(c, deps)
	h.waitNextWindowWithoutSlot(r)
	if armed.Load() {
		t.Fatal("the pre-reboot request was never cut off")
	}
}

func TestWaitsForASlotByWatch(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	other, err := h.store.TryLock(t.Context(), "default", locksmith.Holder{ID: "other"})
	if err != nil {
		t.Fatal(err)
	}
	r := h.start(h.config("boot-1"), h.deps(h.store))
	st := waitState(t, r.d, reboot.StateWaitingSlot)
	if !strings.Contains(st.Detail, "other") {
		t.Fatalf("status does not name the holder: %s", st.Detail)
	}
	h.noReboot()
	if err := h.store.Release(t.Context(), other); err != nil {
		t.Fatal(err)
	}
	h.waitReboot() // no clock advance: only the watch can have woken it
}

func TestEtcdUnreachable(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	cfg := h.config("boot-1")
	cfg.OpTimeout = 300 * time.Millisecond
	r := h.start(cfg, h.deps(locksmith.NewStore(etcdtest.Unreachable(t), "", h.clock.Now)))
	st := waitState(t, r.d, reboot.StateEtcdUnavailable)
	if st.Attempts < 1 || st.NextAttempt.IsZero() || !strings.Contains(st.Detail, "etcd") {
		t.Fatalf("status %+v", st)
	}
	for attempt := st.Attempts + 1; attempt <= 3; attempt++ {
		h.clock.Advance(cfg.RetryMax * 2)
		for st = r.d.Status(); st.Attempts < attempt; st = r.d.Status() {
			select {
			case <-r.d.Changed():
			case <-time.After(guard):
				t.Fatalf("no retry %d: %+v", attempt, st)
			}
		}
	}
	if b, _ := os.ReadFile(cfg.StatusPath); !strings.Contains(string(b), `"etcd-unavailable"`) {
		t.Errorf("status file: %s", b)
	}
	h.noReboot()
}

func TestEtcdDiesWhileWaiting(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	if _, err := h.store.TryLock(t.Context(), "default", locksmith.Holder{ID: "other"}); err != nil {
		t.Fatal(err)
	}
	cfg := h.config("boot-1")
	r := h.start(cfg, h.deps(h.store))
	waitState(t, r.d, reboot.StateWaitingSlot)
	h.etcd.Stop()
	h.clock.Advance(cfg.RetryMax) // the next liveness probe of etcd
	st := waitState(t, r.d, reboot.StateEtcdUnavailable)
	if st.Holding || !strings.Contains(st.Detail, "not rebooting") {
		t.Fatalf("status %+v", st)
	}
	h.noReboot()
}

func TestKilledWhileHolding(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	deps := h.deps(h.store)
	draining := make(chan struct{})
	deps.Drain = func(ctx context.Context) error { close(draining); <-ctx.Done(); return ctx.Err() }
	r1 := h.start(h.config("boot-1"), deps)
	<-draining
	before, ok := h.slot("m1")
	if !ok {
		t.Fatal("no slot while draining")
	}
	r1.stop() // killed holding the slot, before the reboot

	// Restarted in the same boot with the reboot still needed: it re-locks its slot and reboots.
	r2 := h.start(h.config("boot-1"), h.deps(h.store))
	h.waitReboot()
	after, ok := h.slot("m1")
	if !ok || after.CreateRevision != before.CreateRevision || after.Index != before.Index {
		t.Fatalf("restart took a new tenure: before %+v after %+v", before, after)
	}
	r2.stop()

	// Killed again; this time the update was undone meanwhile: the restart releases the slot.
	h.updated.SetStatus(t, dbusapitest.Idle())
	r3 := h.start(h.config("boot-1"), h.deps(h.store))
	waitState(t, r3.d, reboot.StateIdle)
	if _, ok := h.slot("m1"); ok {
		t.Fatal("slot kept though no reboot is needed")
	}
}

func TestRebootRefused(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	h.logind.FailWith("org.freedesktop.DBus.Error.AccessDenied")
	r := h.start(h.config("boot-1"), h.deps(h.store))
	st := waitState(t, r.d, reboot.StateRebootFailed)
	if !strings.Contains(st.LastError, "AccessDenied") {
		t.Fatalf("status %+v", st)
	}
	if _, ok := h.slot("m1"); ok {
		t.Fatal("slot kept after a refused reboot")
	}
	h.logind.FailWith("")
	h.clock.Advance(time.Minute)
	h.waitReboot()
}

func TestInhibitorsPostponeBeforeLocking(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	h.logind.SetInhibitors(sysd.Inhibitor{What: "shutdown", Who: "backup", Why: "copying", Mode: "block", PID: 7})
	cfg := h.config("boot-1")
	cfg.InhibitMaxWait, cfg.InhibitRecheck = 10*time.Minute, time.Minute
	r := h.start(cfg, h.deps(h.store))
	st := waitState(t, r.d, reboot.StateWaitingInhibitor)
	if !strings.Contains(st.Detail, "backup (pid 7): copying") {
		t.Fatalf("status does not report the inhibitor: %s", st.Detail)
	}
	if _, ok := h.slot("m1"); ok {
		t.Fatal("slot held while an inhibitor postpones the reboot")
	}
	// The inhibitor stays; after the maximum postponement the daemon reboots anyway. Each
	// recheck re-publishes the status after arming its timer, so the clock moves in lock-step.
	ch := r.d.Changed()
	for i := 0; ; i++ {
		if i > 12 {
			t.Fatal("no reboot after the maximum postponement")
		}
		h.clock.Advance(cfg.InhibitRecheck)
		select {
		case <-ch:
			ch = r.d.Changed()
			continue
		case <-h.logind.Rebooted():
		case <-time.After(guard):
			t.Fatalf("stuck: %+v", r.d.Status())
		}
		break
	}
	if elapsed := h.clock.Now().Sub(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)); elapsed < cfg.InhibitMaxWait {
		t.Fatalf("rebooted after %s of postponement, before the maximum %s", elapsed, cfg.InhibitMaxWait)
	}
}

func TestStrategyRebootAndOff(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	cfg := h.config("boot-1")
	cfg.Strategy = updateconf.StrategyOff
	off := h.start(cfg, h.deps(nil))
	st := waitFor(t, off.d, "disabled with a reboot needed", func(st reboot.Status) bool {
		return st.State == reboot.StateDisabled && strings.Contains(st.Detail, "reboot needed")
	})
	if _, err := os.Stat(cfg.RebootRequiredPath); err != nil || !strings.Contains(st.Detail, "not rebooting") {
		t.Fatalf("strategy off: sentinel %v, status %+v", err, st)
	}
	off.stop()
	h.noReboot()

	cfg.Strategy = updateconf.StrategyReboot
	r := h.start(cfg, h.deps(nil))
	h.waitReboot()
	waitState(t, r.d, reboot.StateRebooting)
	if _, ok := h.slot("m1"); ok {
		t.Fatal("strategy reboot took a slot")
	}
}

func TestFleetLockStrategy(t *testing.T) {
	h := newHarness(t, dbusapitest.NeedReboot("2.0"), dbusapitest.Boot(reboot.BootSteady, "1.0"))
	srv := httptest.NewServer(fleetlock.NewServer(h.store, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	cfg := h.config("boot-1")
	cfg.Strategy = updateconf.StrategyFleetLock
	client := &fleetlock.Client{BaseURL: srv.URL, ID: "m1", Group: "default"}
	deps := h.deps(nil)
	deps.FleetLock = client

	// Another FleetLock client (say Zincati) holds the only slot.
	zincati := &fleetlock.Client{BaseURL: srv.URL, ID: "zincati-node", Group: "default"}
	if err := zincati.PreReboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	r1 := h.start(cfg, deps)
	waitState(t, r1.d, reboot.StateWaitingSlot)
	zincati.SteadyState(t.Context())
	h.clock.Advance(2 * time.Minute) // FleetLock has no watch: the daemon asks again
	h.waitReboot()
	if _, ok := h.slot("m1"); !ok {
		t.Fatal("no slot in the shared semaphore")
	}
	if b, err := os.ReadFile(filepath.Join(cfg.StateDir, "fleetlock.json")); err != nil || !strings.Contains(string(b), `"to_version": "2.0"`) {
		t.Fatalf("reboot record: %s %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(cfg.StateDir, "fleetlock.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("reboot record: %v %v; want mode 0600", st.Mode(), err)
	}
	r1.stop()

	h.updated.SetStatus(t, dbusapitest.Idle())
	h.updated.SetBoot(t, dbusapitest.Boot(reboot.BootCommitted, "2.0"))
	deps2 := h.deps(nil)
	deps2.FleetLock = client
	cfg.BootID = "boot-2"
	r2 := h.start(cfg, deps2)
	waitState(t, r2.d, reboot.StateIdle)
	if _, ok := h.slot("m1"); ok {
		t.Fatal("FleetLock slot kept after the commit")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "fleetlock.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reboot record left behind: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  reboot.Config
		deps reboot.Deps
	}{
		"unknown strategy":        {reboot.Config{Strategy: "best-effort"}, reboot.Deps{}},
		"etcd-lock without etcd":  {reboot.Config{Strategy: "etcd-lock", MachineID: "m"}, reboot.Deps{Updated: nilUpdated{}, Rebooter: nilRebooter{}}},
		"fleetlock without url":   {reboot.Config{Strategy: "fleetlock"}, reboot.Deps{Updated: nilUpdated{}, Rebooter: nilRebooter{}}},
		"reboot without logind":   {reboot.Config{Strategy: "reboot"}, reboot.Deps{Updated: nilUpdated{}}},
		"no update agent":         {reboot.Config{Strategy: "reboot"}, reboot.Deps{Rebooter: nilRebooter{}}},
		"bad drain policy":        {reboot.Config{Strategy: "reboot", DrainFailure: "ignore"}, reboot.Deps{Updated: nilUpdated{}, Rebooter: nilRebooter{}}},
		"etcd-lock without an id": {reboot.Config{Strategy: "etcd-lock"}, reboot.Deps{Updated: nilUpdated{}, Rebooter: nilRebooter{}, Store: &locksmith.Store{}}},
		"unprintable group":       {reboot.Config{Strategy: "reboot", Group: "a\nb"}, reboot.Deps{Updated: nilUpdated{}, Rebooter: nilRebooter{}}},
	} {
		if _, err := reboot.New(tc.cfg, tc.deps); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

type nilUpdated struct{}

func (nilUpdated) Subscribe(context.Context) (<-chan dbusapi.Signal, error) {
	return nil, errors.New("x")
}
func (nilUpdated) GetStatus(context.Context) (dbusapi.Status, error) { return dbusapi.Status{}, nil }
func (nilUpdated) GetBootStatus(context.Context) (dbusapi.BootStatus, error) {
	return dbusapi.BootStatus{}, nil
}

type nilRebooter struct{}

func (nilRebooter) BlockingInhibitors(context.Context) ([]string, error) { return nil, nil }
func (nilRebooter) Reboot(context.Context) error                         { return nil }
