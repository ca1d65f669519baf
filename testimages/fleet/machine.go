package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/testimages/simhost"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// Daemon timings: errors (etcd, a refused reboot) are retried quickly in a simulation.
const (
	daemonRetryBase = 200 * time.Millisecond
	daemonRetryMax  = 2 * time.Second
	daemonOpTimeout = 10 * time.Second
)

// machine is one host's life: boots, each running an agent and a locksmithd until a reboot.
type machine struct {
	f    *Fleet
	i    int
	name string
	h    *simhost.Host
	log  *slog.Logger
	// requested: locksmithd asked for the reboot in progress (else the agent did).
	requested atomic.Bool
}

// committed reports whether the booted slot carries the GPT successful bit.
func (m *machine) committed() bool {
	slots, err := m.h.Slots()
	if err != nil {
		return false
	}
	slot, _, _ := m.h.Booted()
	return slots[slot.Label].Attr.Successful()
}

// live runs boot after boot until ctx ends.
func (m *machine) live(ctx context.Context) error {
	for {
		err := m.runBoot(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, simhost.ErrRebooted) {
			return err
		}
		if !m.requested.Swap(false) {
			m.f.event(m.i, EventRebootRequested, func(h *Host) string {
				h.Rebooting = true
				h.Reboots++
				return "the agent reboots the host (health gate failed: back to the old slot)"
			})
		}
		m.f.event(m.i, EventDown, func(h *Host) string {
			h.Operation, h.Progress, h.Lock, h.LockDetail = "down", 0, "", ""
			return "down"
		})
		select {
		case <-time.After(m.f.cfg.RebootDuration):
		case <-ctx.Done():
			return nil
		}
		slot, rel, err := m.h.Boot()
		if err != nil {
			return err
		}
		committed := m.committed()
		m.f.event(m.i, EventBooted, func(h *Host) string {
			h.Rebooting = false
			h.Version, h.Slot, h.Committed, h.BootState = rel.Version, slot.Label, committed, ""
			h.Boots = append(h.Boots, Boot{Version: rel.Version, Slot: slot.Label})
			s := fmt.Sprintf("GRUB booted %s from %s (priority %d, tries left %d)", rel.Version, slot.Label, slot.Attr.Priority(), slot.Attr.Tries())
			if rel.Broken {
				s += ", a broken build"
			}
			return s
		})
	}
}

// runBoot runs one boot: the agent, and locksmithd following it, until the machine reboots
// (simhost.ErrRebooted), the agent fails or ctx ends.
func (m *machine) runBoot(ctx context.Context) error {
	l := newLink()
	ci := m.f.cfg.CheckInterval
	cfg := updated.Config{
		Schedule:    updated.Schedule{First: ci, FirstFuzz: ci, Period: ci, PeriodFuzz: ci / 2, MinPoll: ci, MaxInterval: 8 * ci},
		HealthRetry: min(100*time.Millisecond, m.f.cfg.HealthTimeout/10),
		Logger:      m.log.With("component", "updated"),
		OnStatus: func(s dbusapi.Status) {
			l.onStatus(s)
			m.onStatus(s)
		},
		OnBootStatus: func(b dbusapi.BootStatus) {
			l.onBootStatus(b)
			m.onBootStatus(b)
		},
	}
	dctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { m.locksmithd(dctx, l) })
	err := m.h.Run(ctx, cfg)
	stop()
	wg.Wait()
	return err
}

func (m *machine) onStatus(s dbusapi.Status) {
	op := operation(s.CurrentOperation)
	if s.NewVersion == dbusapi.NoVersion { // update_engine's "none known"
		s.NewVersion = ""
	}
	m.f.event(m.i, EventStatus, func(h *Host) string {
		changed := h.Operation != op || h.NewVersion != s.NewVersion
		if op == operation(dbusapi.OpCheckingForUpdate) && h.Operation != op {
			h.Checks++
		}
		h.Operation, h.Progress, h.NewVersion = op, s.Progress, s.NewVersion
		if !changed {
			return ""
		}
		if s.NewVersion != "" && op != operation(dbusapi.OpIdle) {
			return "updated: " + op + " " + s.NewVersion
		}
		return "updated: " + op
	})
}

func (m *machine) onBootStatus(b dbusapi.BootStatus) {
	committed := m.committed()
	m.f.event(m.i, EventBootStatus, func(h *Host) string {
		cur := &h.Boots[len(h.Boots)-1]
		prevState, prevOutcome := h.BootState, cur.Outcome
		h.BootState, h.Committed = b.State, committed
		switch b.State {
		case updated.BootVerifying:
			cur.Outcome = OutcomeVerifying
		case updated.BootCommitted, updated.BootSteady:
			switch cur.Outcome {
			case OutcomeVerifying:
				cur.Outcome = OutcomeCommitted
			case OutcomeRunning:
				cur.Outcome = OutcomeSteady
			}
		case updated.BootRolledBack:
			switch cur.Outcome {
			case OutcomeVerifying:
				cur.Outcome = OutcomeFailed
			case OutcomeRunning:
				cur.Outcome = OutcomeRolledBack
			}
		}
		if prevState == b.State && prevOutcome == cur.Outcome {
			return ""
		}
		switch cur.Outcome {
		case OutcomeVerifying:
			return fmt.Sprintf("boot: %s on trial, health gate running", b.BootedVersion)
		case OutcomeCommitted:
			return fmt.Sprintf("boot: %s healthy, committed (%s successful=1)", b.BootedVersion, b.Slot)
		case OutcomeFailed:
			return fmt.Sprintf("boot: %s FAILED the health gate", b.BootedVersion)
		case OutcomeRolledBack:
			return fmt.Sprintf("boot: rolled back to %s (%s failed)", b.BootedVersion, b.PreviousVersion)
		}
		return fmt.Sprintf("boot: %s %s", b.State, b.BootedVersion)
	})
}

// locksmithd runs the reboot coordinator of this boot until ctx ends, restarting it (as
// systemd would) if it stops on its own.
func (m *machine) locksmithd(ctx context.Context, l *link) {
	for ctx.Err() == nil {
		d, err := reboot.New(reboot.Config{
			Strategy: updateconf.StrategyEtcdLock, Group: m.f.cfg.Group,
			MachineID: m.h.MachineID, BootID: m.h.BootID(), Hostname: m.name,
			RetryBase: daemonRetryBase, RetryMax: daemonRetryMax, OpTimeout: daemonOpTimeout,
		}, reboot.Deps{Updated: l, Rebooter: rebooter{m}, Store: m.f.store, Log: m.log.With("component", "locksmithd")})
		if err != nil {
			m.log.Error("locksmithd cannot start", "error", err)
			return
		}
		fctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { m.followDaemon(fctx, d) })
		err = d.Run(ctx)
		cancel()
		wg.Wait()
		if err != nil && ctx.Err() == nil {
			m.log.Warn("locksmithd stopped; restarting", "error", err)
			select {
			case <-time.After(daemonRetryBase):
			case <-ctx.Done():
			}
		}
	}
}

// followDaemon publishes locksmithd's status changes.
func (m *machine) followDaemon(ctx context.Context, d *reboot.Daemon) {
	for {
		ch := d.Changed()
		st := d.Status()
		m.f.event(m.i, EventLock, func(h *Host) string {
			changed := h.Lock != string(st.State)
			h.Lock, h.LockDetail = string(st.State), st.Detail
			if !changed {
				return ""
			}
			return "locksmithd: " + string(st.State) + ": " + st.Detail
		})
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// rebooter is locksmithd's reboot action (reboot.Rebooter): the simulated machine goes down;
// the boot loader (GRUB's gptprio emulation) picks the slot when it comes back.
type rebooter struct{ m *machine }

func (rebooter) BlockingInhibitors(context.Context) ([]string, error) { return nil, nil }

func (r rebooter) Reboot(ctx context.Context) error {
	r.m.requested.Store(true)
	r.m.f.event(r.m.i, EventRebootRequested, func(h *Host) string {
		h.Rebooting = true
		h.Reboots++
		return "locksmithd reboots the host"
	})
	return r.m.h.Reboot(ctx)
}
