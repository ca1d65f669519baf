package reboot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/window"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// errAbort says a wait ended because the window closed or the reboot is no longer needed.
var errAbort = errors.New("aborted: window closed or reboot no longer needed")

// rebootFlow runs the reboot path until the host reboots, the reboot is no longer needed, or
// ctx ends.
func (d *Daemon) rebootFlow(ctx context.Context) error {
	lock := d.lock
	var inhibitedSince time.Time
	d.retries = 0
	for {
		if err := d.releasePending(ctx); err != nil {
			return err
		}
		if !d.needReboot() {
			d.publishIdle()
			return nil
		}
		// 0. A slot kept after a rollback stops this host too, until an operator frees it.
		if wait, err := d.keptRolledBack(ctx, lock); err != nil {
			return err
		} else if wait {
			continue
		}
		// 1. Wait for a window.
		iv, err := d.waitWindow(ctx)
		if errors.Is(err, errAbort) {
			continue
		}
		if err != nil {
			return err
		}
		// 2. Inhibitors, before taking a slot.
		if wait, err := d.inhibited(ctx, &inhibitedSince); err != nil {
			return err
		} else if wait {
			continue
		}
		// 3. Take a slot, waiting at most until the window closes.
		err = d.acquire(ctx, lock, iv)
		if errors.Is(err, errAbort) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := d.backoff(ctx, d.lockErrorState(), "cannot take a reboot slot; not rebooting", err); err != nil {
				return err
			}
			continue
		}
		// 4. Still inside the window after waiting for the slot?
		if !d.cfg.Windows.Open(d.deps.Clock.Now()) {
			d.log.Info("reboot window closed while waiting for the slot; releasing it")
			d.release(ctx, lock)
			continue
		}
		// 5. Drain.
		if d.deps.Drain != nil {
			d.publish(StateDraining, fmt.Sprintf("running the drain hook (timeout %s)", d.cfg.DrainTimeout), nil)
			if err := d.drain(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if d.cfg.DrainFailure == DrainRelease {
					d.release(ctx, lock)
					if err := d.backoff(ctx, StateDrainFailed, "drain hook failed; released the slot", err); err != nil {
						return err
					}
					continue
				}
				d.log.Warn("drain hook failed; rebooting anyway (drain failure policy proceed)", "err", err)
			}
		}
		// 6. Right before rebooting: window and inhibitors again; never hold a slot while waiting.
		now := d.deps.Clock.Now()
		if !d.cfg.Windows.Open(now) {
			d.log.Info("reboot window closed before the reboot could happen; releasing the slot")
			d.release(ctx, lock)
			continue
		}
		if blocked, err := d.blockers(ctx); err == nil && len(blocked) > 0 && !d.inhibitBudgetSpent(&inhibitedSince) {
			d.log.Info("a shutdown inhibitor appeared; releasing the slot until it goes", "inhibitors", describeInhibitors(blocked))
			d.release(ctx, lock)
			continue
		}
		// 7. Prove the slot is still ours and record the reboot, then reboot.
		opCtx, cancel := d.opCtx(ctx)
		err = lock.markRebooting(opCtx, d.holder())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.release(ctx, lock)
			if err := d.backoff(ctx, d.lockErrorState(), "slot lost before the reboot; not rebooting", err); err != nil {
				return err
			}
			continue
		}
		st, _, _ := d.snapshot()
		d.publish(StateRebooting, fmt.Sprintf("rebooting into %s", st.NewVersion), nil)
		d.log.Info("rebooting", "new_version", st.NewVersion, "slot", lock.describe())
		opCtx, cancel = d.opCtx(ctx)
		err = d.deps.Rebooter.Reboot(opCtx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.release(ctx, lock)
			if err := d.backoff(ctx, StateRebootFailed, "reboot refused; released the slot", err); err != nil {
				return err
			}
			continue
		}
		// The host is going down; keep the slot and wait to be stopped.
		<-ctx.Done()
		return ctx.Err()
	}
}

func (d *Daemon) lockErrorState() State {
	if d.cfg.Strategy == updateconf.StrategyEtcdLock {
		return StateEtcdUnavailable
	}
	return StateLockError
}

// waitWindow returns the open period once a window is open.
func (d *Daemon) waitWindow(ctx context.Context) (window.Interval, error) {
	for {
		now := d.deps.Clock.Now()
		iv, ok := d.cfg.Windows.Next(now)
		if ok && iv.Contains(now) {
			return iv, nil
		}
		wait := 24 * time.Hour
		detail := "no reboot window opens in the next 15 days; checking again in a day"
		if ok {
			wait = iv.Start.Sub(now)
			detail = fmt.Sprintf("reboot needed; outside the reboot windows (%s); next opens %s", d.cfg.Windows, iv.Start.Format(time.RFC3339))
		}
		timer := d.deps.Clock.After(wait)
		_, _, ch := d.snapshot()
		d.publish(StateWaitingWindow, detail, func(s *Status) { s.NextAttempt = iv.Start })
		if err := d.await(ctx, timer, ch); err != nil {
			return window.Interval{}, err
		}
		if !d.needReboot() {
			return window.Interval{}, errAbort
		}
	}
}

// await waits until timer fires or the agent's status changes (ch). It returns ctx's error
// when ctx ends first, and errLost when the slot is lost meanwhile.
func (d *Daemon) await(ctx context.Context, timer <-chan time.Time, ch <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-d.lost:
		return errLost
	case <-timer:
	case <-ch:
	}
	return nil
}

// keptRolledBack reports whether this host holds a slot it kept after a rollback, waiting one
// recheck (RetryMax, jittered) or agent change if so. Rebooting on that slot for a later update
// would lift the group's stop without anyone looking at the failure, so the host waits for an
// operator to free it (locksmithctl unlock) like every other host of the group. When the slot
// cannot be read it backs off: it does not reboot without knowing.
func (d *Daemon) keptRolledBack(ctx context.Context, lock locker) (bool, error) {
	opCtx, cancel := d.opCtx(ctx)
	note, kept, err := lock.keptRolledBack(opCtx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return true, d.backoff(ctx, d.lockErrorState(), "cannot read this host's reboot slot; not rebooting", err)
	}
	if !kept {
		return false, nil
	}
	st, _, ch := d.snapshot()
	detail := fmt.Sprintf("reboot into %s needed, but this host keeps its reboot slot after a rollback (%s); "+
		"not rebooting until an operator runs locksmithctl unlock %s", st.NewVersion, note, d.cfg.MachineID)
	if d.Status().Detail != detail {
		d.log.Error("not rebooting: this host keeps its reboot slot after a rollback; an operator must investigate and run locksmithctl unlock "+d.cfg.MachineID,
			"new_version", st.NewVersion, "note", note)
	}
	timer := d.deps.Clock.After(jitter(d.cfg.RetryMax)) // armed before the status says so
	d.publish(StateRolledBack, detail, nil)
	return true, d.await(ctx, timer, ch)
}

// inhibited reports whether block inhibitors postpone the reboot now, waiting one recheck
// interval if so. After InhibitMaxWait of postponement it lets the reboot go on.
func (d *Daemon) inhibited(ctx context.Context, since *time.Time) (bool, error) {
	blocked, err := d.blockers(ctx)
	if err != nil {
		d.log.Warn("cannot list shutdown inhibitors; going on", "err", err)
		return false, nil
	}
	if len(blocked) == 0 {
		*since = time.Time{}
		return false, nil
	}
	if d.inhibitBudgetSpent(since) {
		d.log.Warn("shutdown inhibitors still present after the maximum postponement; rebooting anyway",
			"inhibitors", describeInhibitors(blocked), "max_wait", d.cfg.InhibitMaxWait)
		return false, nil
	}
	timer := d.deps.Clock.After(d.cfg.InhibitRecheck)
	_, _, ch := d.snapshot()
	d.publish(StateWaitingInhibitor, "reboot postponed by shutdown inhibitors: "+describeInhibitors(blocked), nil)
	return true, d.await(ctx, timer, ch)
}

func (d *Daemon) blockers(ctx context.Context) ([]string, error) {
	opCtx, cancel := d.opCtx(ctx)
	defer cancel()
	return d.deps.Rebooter.BlockingInhibitors(opCtx)
}

// inhibitBudgetSpent starts the postponement clock on first use and says whether it ran out.
func (d *Daemon) inhibitBudgetSpent(since *time.Time) bool {
	now := d.deps.Clock.Now()
	if since.IsZero() {
		*since = now
	}
	return now.Sub(*since) >= d.cfg.InhibitMaxWait
}

// acquire takes a slot, waiting until iv ends or the reboot is no longer needed.
func (d *Daemon) acquire(ctx context.Context, lock locker, iv window.Interval) error {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closes <-chan time.Time
	if !iv.End.IsZero() {
		closes = d.deps.Clock.After(iv.End.Sub(d.deps.Clock.Now()))
	}
	go func() {
		for {
			_, _, ch := d.snapshot()
			if !d.needReboot() {
				cancel()
				return
			}
			select {
			case <-actx.Done():
				return
			case <-d.lost:
				cancel()
				return
			case <-closes:
				cancel()
				return
			case <-ch:
			}
		}
	}()
	err := lock.acquire(actx, d.holder(), func(detail string) {
		d.publish(StateWaitingSlot, detail, nil)
	})
	if err != nil && ctx.Err() == nil {
		// The slot may be taken all the same: a transaction (or FleetLock request) cut off by
		// the window closing or a timeout can commit with its answer lost. Give back whatever
		// this host holds before waiting again; releasePending retries if that fails.
		if rerr := d.releaseIfHeld(ctx, lock); rerr != nil {
			d.log.Warn("cannot make sure the failed acquisition left no reboot slot behind; will retry", "err", rerr)
		}
	}
	if err != nil && ctx.Err() == nil && actx.Err() != nil {
		return errAbort
	}
	if err == nil {
		d.retries = 0
		d.log.Info("reboot slot taken", "slot", lock.describe())
	}
	return err
}

// release gives the slot back; a failure leaves it pending for the next pass.
func (d *Daemon) release(ctx context.Context, lock locker) {
	opCtx, cancel := d.opCtx(ctx)
	defer cancel()
	if err := lock.release(opCtx); err != nil {
		d.log.Warn("cannot release the reboot slot; will retry", "err", err)
		d.releaseDue = true
		return
	}
	d.log.Info("reboot slot released")
}

// releaseIfHeld gives back whatever slot this host holds (see locker.releaseIfHeld); a failure
// leaves it pending for the next pass.
func (d *Daemon) releaseIfHeld(ctx context.Context, lock locker) error {
	opCtx, cancel := d.opCtx(ctx)
	defer cancel()
	if err := lock.releaseIfHeld(opCtx); err != nil {
		d.releaseDue = true
		return err
	}
	d.releaseDue = false
	return nil
}

// releasePending retries a release that failed, as unlock-if-held, until it succeeds: the
// daemon neither waits for a window or slot nor reboots while it may hold a slot unknowingly.
// Each try is bounded by OpTimeout and the retries by the capped, jittered backoff.
func (d *Daemon) releasePending(ctx context.Context) error {
	for d.releaseDue {
		if err := d.releaseIfHeld(ctx, d.lock); err != nil {
			if err := d.backoff(ctx, d.lockErrorState(), "cannot release the reboot slot", err); err != nil {
				return err
			}
			continue
		}
		d.log.Info("pending release done: this host holds no reboot slot")
	}
	return nil
}

// drain runs the drain hook with DrainTimeout, timed by the daemon's clock.
func (d *Daemon) drain(ctx context.Context) error {
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timeout := errors.New("drain hook timed out after " + d.cfg.DrainTimeout.String())
	timer := d.deps.Clock.After(d.cfg.DrainTimeout)
	go func() {
		select {
		case <-dctx.Done():
		case <-timer:
			cancel(timeout)
		}
	}()
	err := d.deps.Drain(dctx)
	if context.Cause(dctx) == timeout {
		return timeout
	}
	return err
}

// settle decides, at start, about a slot this host already holds. It returns true when the
// reboot the slot was taken for should go on.
func (d *Daemon) settle(ctx context.Context) (bool, error) {
	lock := d.lock
	for {
		h, found, err := d.findHeld(ctx, lock)
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			if err := d.backoff(ctx, d.lockErrorState(), "cannot read this host's reboot slot", err); err != nil {
				return false, nil
			}
			continue
		}
		d.retries = 0
		if !found {
			return false, nil
		}
		st, boot, ch := d.snapshot()
		act, why := Decide(h, d.cfg.BootID, boot, st)
		d.log.Info("found this host's reboot slot", "action", act.String(), "reason", why, "to_version", h.ToVersion)
		switch act {
		case Continue:
			return true, nil
		case Release:
			opCtx, cancel := d.opCtx(ctx)
			err := lock.release(opCtx)
			cancel()
			if err != nil {
				if err := d.backoff(ctx, d.lockErrorState(), "cannot release the reboot slot", err); err != nil {
					return false, nil
				}
				continue
			}
			d.log.Info("reboot slot released", "reason", why)
			return false, nil
		case KeepRolledBack, KeepUnexpected:
			state := StateRolledBack
			if act == KeepUnexpected {
				state = StateUnexpectedVersion
			}
			opCtx, cancel := d.opCtx(ctx)
			err := lock.markRolledBack(opCtx, why)
			cancel()
			if err != nil {
				d.log.Warn("cannot record the rollback in the holder value", "err", err)
			}
			d.log.Error("KEEPING the reboot slot: "+why+"; the group stops rebooting until an operator investigates and runs locksmithctl unlock "+d.cfg.MachineID,
				"group", d.cfg.Group, "machine_id", d.cfg.MachineID)
			d.publish(state, "keeping the reboot slot: "+why, nil)
			return false, nil
		case Wait:
			opCtx, cancel := d.opCtx(ctx)
			if err := lock.touch(opCtx); err != nil {
				d.log.Warn("cannot record in the reboot slot that this host is up", "err", err)
			}
			cancel()
			d.publish(StateVerifying, "holding the reboot slot until the new boot is committed: "+why, nil)
			select {
			case <-ctx.Done():
				return false, nil
			case <-d.lost:
				return false, errLost
			case <-ch:
			}
		}
	}
}

// findHeld looks for this host's slot: in etcd, or in the FleetLock reboot record.
func (d *Daemon) findHeld(ctx context.Context, lock locker) (locksmith.Holder, bool, error) {
	opCtx, cancel := d.opCtx(ctx)
	defer cancel()
	return lock.find(opCtx)
}
