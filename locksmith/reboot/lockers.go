package reboot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// locker is how a strategy holds a reboot slot.
type locker interface {
	// acquire takes (or re-takes) the slot, calling waiting while the group is full, until ctx ends.
	acquire(ctx context.Context, h locksmith.Holder, waiting func(detail string)) error
	// markRebooting proves the slot is still held and records the reboot about to happen.
	markRebooting(ctx context.Context, h locksmith.Holder) error
	// markRolledBack records that the host keeps the slot after a failed boot.
	markRolledBack(ctx context.Context, why string) error
	// touch records that the host holding the slot is alive (status flags unseen holders).
	touch(ctx context.Context) error
	release(ctx context.Context) error
	// releaseIfHeld gives back whatever slot this host's id holds, known or not (unlock-if-held,
	// as CoreOS locksmith does): an acquisition that failed or was cut off may have committed
	// with its answer lost. A slot kept after a rollback stays.
	releaseIfHeld(ctx context.Context) error
	// find returns the slot this host holds from before this start, if any.
	find(ctx context.Context) (locksmith.Holder, bool, error)
	// keptRolledBack reports whether this host holds a slot it kept after a rollback, with the
	// holder's note. Only an operator may free such a slot; until then the host must not reboot.
	keptRolledBack(ctx context.Context) (note string, kept bool, err error)
	held() bool
	describe() string
}

func (d *Daemon) newLocker() locker {
	switch d.cfg.Strategy {
	case updateconf.StrategyEtcdLock:
		return &etcdLocker{store: d.deps.Store, group: d.cfg.Group, id: d.cfg.MachineID,
			clock: d.deps.Clock, opTimeout: d.cfg.OpTimeout, probe: d.cfg.RetryMax}
	case updateconf.StrategyFleetLock:
		return &fleetLocker{c: d.deps.FleetLock, record: filepath.Join(d.cfg.StateDir, "fleetlock.json"), clock: d.deps.Clock, poll: d.cfg.FleetLockPoll}
	}
	return noLocker{}
}

// noLocker is the reboot strategy: no slot at all.
type noLocker struct{}

func (noLocker) acquire(context.Context, locksmith.Holder, func(string)) error { return nil }
func (noLocker) markRebooting(context.Context, locksmith.Holder) error         { return nil }
func (noLocker) markRolledBack(context.Context, string) error                  { return nil }
func (noLocker) touch(context.Context) error                                   { return nil }
func (noLocker) release(context.Context) error                                 { return nil }
func (noLocker) releaseIfHeld(context.Context) error                           { return nil }
func (noLocker) find(context.Context) (locksmith.Holder, bool, error) {
	return locksmith.Holder{}, false, nil
}
func (noLocker) keptRolledBack(context.Context) (string, bool, error) { return "", false, nil }
func (noLocker) held() bool                                           { return false }
func (noLocker) describe() string                                     { return "none (strategy reboot)" }

// etcdLocker holds a slot of the etcd semaphore.
type etcdLocker struct {
	store     *locksmith.Store
	group, id string
	clock     Clock
	opTimeout time.Duration
	// probe is how often etcd is checked while waiting on the watch: a watch on an unreachable
	// etcd is silent, and the status must not say "waiting for a slot" then.
	probe time.Duration
	lk    *locksmith.Lock
}

func (e *etcdLocker) acquire(ctx context.Context, h locksmith.Holder, waiting func(string)) error {
	tctx, cancel := context.WithTimeout(ctx, e.opTimeout)
	lk, err := e.store.TryLock(tctx, e.group, h)
	cancel()
	var full *locksmith.FullError
	if errors.As(err, &full) {
		probe := e.clock.After(e.probe) // armed before the status says so
		waiting(fmt.Sprintf("waiting for a reboot slot: %s", strings.TrimPrefix(full.Error(), "locksmith: ")))
		lk, err = e.lockProbing(ctx, h, probe)
	}
	if err != nil {
		return err
	}
	e.lk = &lk
	return nil
}

// lockProbing waits in Store.Lock, reading the group every probe interval to notice an etcd
// that stopped answering.
func (e *etcdLocker) lockProbing(ctx context.Context, h locksmith.Holder, probe <-chan time.Time) (locksmith.Lock, error) {
	lctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		for {
			select {
			case <-lctx.Done():
				return
			case <-probe:
			}
			probe = e.clock.After(e.probe)
			pctx, pcancel := context.WithTimeout(lctx, e.opTimeout)
			_, err := e.store.State(pctx, e.group)
			pcancel()
			if err != nil && lctx.Err() == nil {
				cancel(err)
				return
			}
		}
	}()
	lk, err := e.store.Lock(lctx, e.group, h)
	if cause := context.Cause(lctx); err != nil && ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return lk, cause
	}
	return lk, err
}

func (e *etcdLocker) markRebooting(ctx context.Context, h locksmith.Holder) error {
	return e.update(ctx, func(v *locksmith.Holder) {
		v.State, v.Note = locksmith.HolderRebooting, ""
		v.BootID, v.FromVersion, v.ToVersion = h.BootID, h.FromVersion, h.ToVersion
	})
}

func (e *etcdLocker) markRolledBack(ctx context.Context, why string) error {
	return e.update(ctx, func(v *locksmith.Holder) { v.State, v.Note = locksmith.HolderRolledBack, truncate(why) })
}

func (e *etcdLocker) touch(ctx context.Context) error {
	return e.update(ctx, func(*locksmith.Holder) {})
}

func (e *etcdLocker) update(ctx context.Context, fn func(*locksmith.Holder)) error {
	if e.lk == nil {
		return errors.New("no slot held")
	}
	lk, err := e.store.Update(ctx, *e.lk, fn)
	if errors.Is(err, locksmith.ErrLost) {
		e.lk = nil
	}
	if err != nil {
		return err
	}
	e.lk = &lk
	return nil
}

func (e *etcdLocker) release(ctx context.Context) error {
	if e.lk == nil {
		return nil
	}
	if err := e.store.Release(ctx, *e.lk); err != nil && !errors.Is(err, locksmith.ErrLost) {
		return err
	}
	e.lk = nil
	return nil
}

// heldNow reads the slot this host's id holds in the store now; nil, and e.lk forgotten, when
// it holds none (never taken, released, or unlocked by an operator).
func (e *etcdLocker) heldNow(ctx context.Context) (*locksmith.Lock, error) {
	lk, err := e.store.Held(ctx, e.group, e.id)
	if errors.Is(err, locksmith.ErrNotHeld) {
		e.lk = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &lk, nil
}

func (e *etcdLocker) releaseIfHeld(ctx context.Context) error {
	lk, err := e.heldNow(ctx)
	if err != nil || lk == nil {
		return err
	}
	if lk.Slot.Holder.State == locksmith.HolderRolledBack {
		e.lk = lk
		return nil
	}
	if err := e.store.Release(ctx, *lk); err != nil && !errors.Is(err, locksmith.ErrLost) {
		return err
	}
	e.lk = nil
	return nil
}

func (e *etcdLocker) find(ctx context.Context) (locksmith.Holder, bool, error) {
	lk, err := e.heldNow(ctx)
	if err != nil || lk == nil {
		return locksmith.Holder{}, false, err
	}
	e.lk = lk
	return lk.Slot.Holder, true, nil
}

func (e *etcdLocker) keptRolledBack(ctx context.Context) (string, bool, error) {
	lk, err := e.heldNow(ctx)
	if err != nil || lk == nil || lk.Slot.Holder.State != locksmith.HolderRolledBack {
		return "", false, err
	}
	e.lk = lk
	return lk.Slot.Holder.Note, true, nil
}

func (e *etcdLocker) held() bool { return e.lk != nil }

func (e *etcdLocker) describe() string {
	if e.lk == nil {
		return "none"
	}
	return fmt.Sprintf("group %s slot %d (token %d)", e.group, e.lk.Slot.Index, e.lk.Token())
}

func truncate(s string) string {
	if len(s) > locksmith.MaxFieldLen {
		return s[:locksmith.MaxFieldLen]
	}
	return s
}

// fleetLocker holds a slot from a FleetLock server and keeps a local record of the reboot.
type fleetLocker struct {
	c      *fleetlock.Client
	record string
	clock  Clock
	poll   time.Duration
	have   bool
}

// rebootRecord is StateDir/fleetlock.json.
type rebootRecord struct {
	Version     int       `json:"version"`
	BootID      string    `json:"boot_id"`
	FromVersion string    `json:"from_version"`
	ToVersion   string    `json:"to_version"`
	State       string    `json:"state,omitempty"`
	At          time.Time `json:"at"`
}

const recordVersion = 1

func (f *fleetLocker) acquire(ctx context.Context, h locksmith.Holder, waiting func(string)) error {
	for {
		err := f.c.PreReboot(ctx)
		if err == nil {
			f.have = true
			return nil
		}
		if !fleetlock.IsFull(err) {
			return err
		}
		timer := f.clock.After(f.poll)
		waiting(fmt.Sprintf("waiting for a reboot slot from the FleetLock server (%v); asking again in %s", err, f.poll))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
		}
	}
}

func (f *fleetLocker) markRebooting(ctx context.Context, h locksmith.Holder) error {
	// Re-locking is recursive: success proves the server still counts this host as a holder.
	if err := f.c.PreReboot(ctx); err != nil {
		return err
	}
	return f.write(rebootRecord{Version: recordVersion, BootID: h.BootID, FromVersion: h.FromVersion, ToVersion: h.ToVersion, At: f.clock.Now().UTC()})
}

func (f *fleetLocker) markRolledBack(_ context.Context, why string) error {
	rec, ok, err := f.read()
	if err != nil || !ok {
		rec = rebootRecord{Version: recordVersion, At: f.clock.Now().UTC()}
	}
	rec.State = string(locksmith.HolderRolledBack)
	return f.write(rec)
}

// touch: a FleetLock server keeps no holder value to stamp.
func (f *fleetLocker) touch(context.Context) error { return nil }

func (f *fleetLocker) release(ctx context.Context) error {
	if err := f.c.SteadyState(ctx); err != nil {
		return err
	}
	f.have = false
	if err := os.Remove(f.record); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the FleetLock reboot record: %w", err)
	}
	return nil
}

// releaseIfHeld sends steady-state, which is unlock-if-held, unless the reboot record says the
// host keeps its slot after a rollback.
func (f *fleetLocker) releaseIfHeld(ctx context.Context) error {
	if rec, ok, err := f.read(); err == nil && ok && rec.State == string(locksmith.HolderRolledBack) {
		return nil
	}
	return f.release(ctx)
}

// find reads the reboot record. Without one the host may still hold a slot (taken by hand, or
// before a crash), so it is treated as held with no expected version: FleetLock's
// steady-state is safe to send when not holding.
func (f *fleetLocker) find(context.Context) (locksmith.Holder, bool, error) {
	rec, ok, err := f.read()
	if err != nil {
		return locksmith.Holder{}, false, err
	}
	f.have = true
	if !ok {
		return locksmith.Holder{}, true, nil
	}
	return locksmith.Holder{BootID: rec.BootID, FromVersion: rec.FromVersion, ToVersion: rec.ToVersion, State: locksmith.HolderState(rec.State)}, true, nil
}

func (f *fleetLocker) read() (rebootRecord, bool, error) {
	b, err := os.ReadFile(f.record)
	if errors.Is(err, os.ErrNotExist) {
		return rebootRecord{}, false, nil
	}
	if err != nil {
		return rebootRecord{}, false, fmt.Errorf("read the FleetLock reboot record: %w", err)
	}
	var rec rebootRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Version != recordVersion {
		return rebootRecord{}, false, fmt.Errorf("FleetLock reboot record %s is unreadable or of another version (%v); remove it to start over", f.record, err)
	}
	return rec, true, nil
}

func (f *fleetLocker) write(rec rebootRecord) error {
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := os.MkdirAll(filepath.Dir(f.record), 0o755); err != nil {
		return fmt.Errorf("create the state directory: %w", err)
	}
	return atomicfile.WriteFile(f.record, append(b, '\n'), 0o600)
}

// keptRolledBack is always false: FleetLock cannot tell whether an operator freed the slot on
// the server, so refusing on the local record would stop this host for good.
func (f *fleetLocker) keptRolledBack(context.Context) (string, bool, error) { return "", false, nil }

func (f *fleetLocker) held() bool { return f.have }

func (f *fleetLocker) describe() string { return "FleetLock slot at " + f.c.BaseURL }
