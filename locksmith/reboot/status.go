package reboot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

// State is what the daemon is doing.
type State string

// The daemon's states.
const (
	StateStarting          State = "starting"
	StateIdle              State = "idle"
	StateDisabled          State = "disabled"
	StateWaitingWindow     State = "waiting-window"
	StateWaitingInhibitor  State = "waiting-inhibitor"
	StateWaitingSlot       State = "waiting-slot"
	StateEtcdUnavailable   State = "etcd-unavailable"
	StateLockError         State = "lock-error"
	StateDraining          State = "draining"
	StateDrainFailed       State = "drain-failed"
	StateRebooting         State = "rebooting"
	StateRebootFailed      State = "reboot-failed"
	StateVerifying         State = "verifying"
	StateRolledBack        State = "rolled-back"
	StateUnexpectedVersion State = "unexpected-version"
)

const statusVersion = 1

// Status is the daemon's published state (also the JSON of StatusPath).
type Status struct {
	Version  int    `json:"version"`
	State    State  `json:"state"`
	Detail   string `json:"detail"`
	Strategy string `json:"strategy"`
	Group    string `json:"group"`
	// Holding is true while this host holds a reboot slot.
	Holding bool      `json:"holding"`
	Since   time.Time `json:"since"`
	// Attempts counts consecutive failures; NextAttempt is when the next try happens.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// Status returns the current status.
func (d *Daemon) Status() Status {
	d.stMu.Lock()
	defer d.stMu.Unlock()
	return d.st
}

// Changed returns a channel closed at the next status change.
func (d *Daemon) Changed() <-chan struct{} {
	d.stMu.Lock()
	defer d.stMu.Unlock()
	return d.stChange
}

// publish sets the status, logs a change of state and writes the status files.
func (d *Daemon) publish(state State, detail string, edit func(*Status)) {
	d.stMu.Lock()
	prev := d.st
	st := Status{Version: statusVersion, State: state, Detail: detail, Strategy: d.cfg.Strategy, Group: d.cfg.Group,
		Holding: d.lock.held(), Since: prev.Since}
	if state != prev.State {
		st.Since = d.deps.Clock.Now()
	}
	if edit != nil {
		edit(&st)
	}
	d.st = st
	close(d.stChange)
	d.stChange = make(chan struct{})
	d.stMu.Unlock()
	if st.State != prev.State || st.Detail != prev.Detail {
		if st.State != prev.State {
			d.log.Info("state "+string(st.State), "detail", detail)
		}
		d.writeStatus(st)
	}
}

func (d *Daemon) writeStatus(st Status) {
	if p := d.cfg.StatusPath; p != "" {
		b, _ := json.MarshalIndent(st, "", "  ")
		if err := writeAtomicDir(p, append(b, '\n')); err != nil {
			d.log.Warn("cannot write the status file", "path", p, "err", err)
		}
	}
	if p := d.cfg.CoordinatorPath; p != "" {
		body := fmt.Sprintf("NAME=locksmithd\nSTRATEGY=%s\nSTATE=%s\n", d.cfg.Strategy, coordinatorState(st.State))
		if err := writeAtomicDir(p, []byte(body)); err != nil {
			d.log.Warn("cannot write coordinator.conf", "path", p, "err", err)
		}
	}
}

// coordinatorState maps a state to CoreOS coordinator.conf's STATE.
func coordinatorState(s State) string {
	switch s {
	case StateStarting:
		return "starting"
	case StateDisabled:
		return "disabled"
	case StateRebooting:
		return "rebooting"
	case StateWaitingWindow, StateWaitingInhibitor, StateWaitingSlot, StateEtcdUnavailable, StateLockError,
		StateDraining, StateDrainFailed, StateRebootFailed:
		return "reboot-planned"
	}
	return "running"
}

func writeAtomicDir(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}
