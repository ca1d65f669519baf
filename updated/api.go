package updated

import (
	"fmt"

	"github.com/twinslot/twinslot/updated/dbusapi"
)

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
