package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/testimages/simhost"
)

// Timings make a simulated fleet run in seconds instead of hours. Zero fields take the defaults.
type Timings struct {
	// CheckInterval is the agents' update check period, and about their first check after a
	// boot (±50 %); default 1s.
	CheckInterval time.Duration
	// HealthTimeout bounds the health gate of a new boot (update.conf HEALTH_TIMEOUT); default 5s.
	HealthTimeout time.Duration
	// RebootDuration is how long a host is down between a reboot and its next boot; default 500ms.
	RebootDuration time.Duration
}

// Defaults of Timings.
const (
	DefaultCheckInterval  = time.Second
	DefaultHealthTimeout  = 5 * time.Second
	DefaultRebootDuration = 500 * time.Millisecond
)

// Config describes a fleet.
type Config struct {
	// Hosts is the number of hosts, named host-1 … host-N.
	Hosts int
	// Dir holds one directory per host (Dir/host-1, …).
	Dir string
	// Disk is a built disk image (testimages.BuildDisk), copied for every host.
	Disk string
	// Server is the Omaha update URL (…/v1/update/) written to every host's update.conf.
	Server string
	// Group is the hosts' Omaha GROUP and their locksmith group; default "stable".
	Group string
	// Trust is every host's payload trust root.
	Trust *payload.TrustRoot
	// Etcd is a client of the etcd holding the reboot semaphore.
	Etcd *clientv3.Client
	Timings
	// Logger receives the agents' and daemons' logs (with host=NAME); nil discards them.
	Logger *slog.Logger
	// OnEvent, when set, sees every event, in order, as it happens. It must not block long and
	// must not call the Fleet.
	OnEvent func(Event)
}

// EventKind says what an Event is about.
type EventKind string

// Event kinds.
const (
	EventStatus          EventKind = "status"           // the agent's operation changed
	EventBootStatus      EventKind = "boot-status"      // the agent's view of this boot changed
	EventLock            EventKind = "lock"             // locksmithd's state changed
	EventRebootRequested EventKind = "reboot-requested" // locksmithd or the agent asked for a reboot
	EventDown            EventKind = "down"             // the machine went down
	EventBooted          EventKind = "booted"           // the boot loader started a slot
	EventHolders         EventKind = "holders"          // the group's reboot slot holders changed
	EventError           EventKind = "error"            // a host stopped with an error
)

// Event is one thing that happened in the fleet.
type Event struct {
	At   time.Time
	Host string // "" for fleet-wide events
	Kind EventKind
	Text string // for people
	// Rebooting is the number of hosts between "reboot requested" and "booted" after this event.
	Rebooting int
}

// Outcome is how a boot ended (or is going).
type Outcome string

// Boot outcomes.
const (
	OutcomeRunning    Outcome = ""            // nothing decided yet
	OutcomeSteady     Outcome = "steady"      // a slot that was already good
	OutcomeVerifying  Outcome = "verifying"   // a new slot on trial
	OutcomeCommitted  Outcome = "committed"   // a new slot passed the health gate
	OutcomeFailed     Outcome = "failed"      // a new slot failed the health gate
	OutcomeRolledBack Outcome = "rolled-back" // back on the old slot after a failed one
)

// Boot is one boot of a host.
type Boot struct {
	Version string  `json:"version"`
	Slot    string  `json:"slot"`
	Outcome Outcome `json:"outcome"`
}

// Symbol is a short mark for the outcome: ✓ committed, ✗ failed, ↩ rolled back.
func (o Outcome) Symbol() string {
	switch o {
	case OutcomeCommitted:
		return "✓"
	case OutcomeFailed:
		return "✗"
	case OutcomeRolledBack:
		return "↩"
	}
	return ""
}

// Host is what a host looks like from outside.
type Host struct {
	Name      string `json:"name"`
	MachineID string `json:"machine_id"`
	// Operation is the agent's current operation without the UPDATE_STATUS_ prefix, lower
	// case ("idle", "downloading", "updated_need_reboot"), or "down" while rebooting.
	Operation string  `json:"operation"`
	Progress  float64 `json:"progress"`
	// NewVersion is the version being installed or waiting for a reboot.
	NewVersion string `json:"new_version,omitempty"`
	// BootState is the agent's boot status: verifying, committed, rolled-back or steady.
	BootState string `json:"boot_state"`
	// Lock is locksmithd's state (daemon.State), LockDetail its sentence.
	Lock       string `json:"lock"`
	LockDetail string `json:"lock_detail,omitempty"`
	// Version and Slot are what runs now.
	Version string `json:"version"`
	Slot    string `json:"slot"`
	// Committed: the booted slot has the GPT successful bit.
	Committed bool `json:"committed"`
	// Rebooting: between a reboot request and the next boot.
	Rebooting bool `json:"rebooting"`
	Reboots   int  `json:"reboots"`
	// Checks counts the agent's update checks.
	Checks int    `json:"checks"`
	Boots  []Boot `json:"boots"`
	Err    string `json:"error,omitempty"`
}

// History renders the boots: "1.0.0 A → 1.0.1 B ✓ → 1.0.2 A ✗ → 1.0.1 B ↩".
func (h Host) History() string {
	var parts []string
	for _, b := range h.Boots {
		s := b.Version + " " + strings.TrimPrefix(b.Slot, "USR-")
		if sym := b.Outcome.Symbol(); sym != "" {
			s += " " + sym
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " → ")
}

// State is a snapshot of the fleet.
type State struct {
	Hosts []Host `json:"hosts"`
	// Holders are the group's reboot slot holders as last read from etcd; Max its limit.
	Holders []locksmith.Slot `json:"holders"`
	Max     int              `json:"max"`
	// Rebooting counts hosts between a reboot request and the next boot.
	Rebooting int `json:"rebooting"`
}

// Host returns the host named name.
func (s State) Host(name string) (Host, bool) {
	i := slices.IndexFunc(s.Hosts, func(h Host) bool { return h.Name == name })
	if i < 0 {
		return Host{}, false
	}
	return s.Hosts[i], true
}

// Holder returns the slot held by machineID.
func (s State) Holder(machineID string) (locksmith.Slot, bool) {
	i := slices.IndexFunc(s.Holders, func(sl locksmith.Slot) bool { return sl.Holder.ID == machineID })
	if i < 0 {
		return locksmith.Slot{}, false
	}
	return s.Holders[i], true
}

// Fleet is N simulated hosts, each running the real update agent and the real locksmithd.
type Fleet struct {
	cfg   Config
	store *locksmith.Store
	ms    []*machine

	mu      sync.Mutex // guards st and changed, and orders events
	st      State
	changed chan struct{}
}

// New prepares the hosts (each gets a copy of Disk, its own machine id and state directory, and
// boots once) but starts nothing; Run does.
func New(ctx context.Context, cfg Config) (*Fleet, error) {
	switch {
	case cfg.Hosts <= 0:
		return nil, fmt.Errorf("fleet: %d hosts", cfg.Hosts)
	case cfg.Disk == "" || cfg.Dir == "":
		return nil, errors.New("fleet: Config needs Disk and Dir")
	case cfg.Server == "":
		return nil, errors.New("fleet: Config needs the Omaha Server URL")
	case cfg.Etcd == nil:
		return nil, errors.New("fleet: Config needs an etcd client")
	}
	if cfg.Group == "" {
		cfg.Group = "stable"
	}
	if err := locksmith.ValidateGroup(cfg.Group); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CheckInterval, DefaultCheckInterval)
	def(&cfg.HealthTimeout, DefaultHealthTimeout)
	def(&cfg.RebootDuration, DefaultRebootDuration)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, store: locksmith.NewStore(cfg.Etcd, "", nil), changed: make(chan struct{})}
	ls, err := f.store.State(ctx, cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("fleet: read the reboot semaphore: %w", err)
	}
	f.st.Holders, f.st.Max = ls.Slots, ls.Config.Max
	for i := range cfg.Hosts {
		name := fmt.Sprintf("host-%d", i+1)
		h, err := simhost.New(ctx, filepath.Join(cfg.Dir, name), simhost.Options{
			Disk: cfg.Disk, Server: cfg.Server, Group: cfg.Group, Trust: cfg.Trust,
			Conf: []string{"REBOOT_STRATEGY=etcd-lock", "HEALTH_TIMEOUT=" + cfg.HealthTimeout.String()},
		})
		if err != nil {
			return nil, fmt.Errorf("fleet: %s: %w", name, err)
		}
		m := &machine{f: f, i: i, name: name, h: h, log: cfg.Logger.With("host", name)}
		f.ms = append(f.ms, m)
		slot, rel, _ := h.Booted()
		hs := Host{Name: name, MachineID: h.MachineID, Operation: "down", Version: rel.Version, Slot: slot.Label,
			Boots: []Boot{{Version: rel.Version, Slot: slot.Label}}}
		hs.Committed = m.committed()
		f.st.Hosts = append(f.st.Hosts, hs)
	}
	return f, nil
}

// Hosts returns the simulated machines, in order (host-1 first).
func (f *Fleet) Hosts() []*simhost.Host {
	out := make([]*simhost.Host, len(f.ms))
	for i, m := range f.ms {
		out[i] = m.h
	}
	return out
}

// Group is the hosts' Omaha and locksmith group.
func (f *Fleet) Group() string { return f.cfg.Group }

// Run runs every host (agent and locksmithd, rebooting when asked) and follows the group's
// reboot slots in etcd until ctx ends. It returns the errors of hosts that stopped for
// another reason than ctx ending (an agent that failed, a machine that no longer boots); the
// other hosts keep running meanwhile.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(f.ms))
	wg.Go(func() { f.followHolders(ctx) })
	for i, m := range f.ms {
		wg.Go(func() {
			if err := m.live(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", m.name, err)
				f.event(m.i, EventError, func(h *Host) string { h.Err = err.Error(); return "stopped: " + h.Err })
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// State returns a snapshot.
func (f *Fleet) State() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Hosts = slices.Clone(st.Hosts)
	for i := range st.Hosts {
		st.Hosts[i].Boots = slices.Clone(st.Hosts[i].Boots)
	}
	st.Holders = slices.Clone(st.Holders)
	return st
}

// Changed returns a channel closed at the next change of State.
func (f *Fleet) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Wait waits until cond holds for the fleet's state and returns that state, or ctx's error with
// the last state.
func (f *Fleet) Wait(ctx context.Context, cond func(State) bool) (State, error) {
	for {
		ch := f.Changed()
		st := f.State()
		if cond(st) {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// event applies edit to host i (i < 0: to the fleet only); edit returns the event's text ("":
// a change of state only, no event).
func (f *Fleet) event(i int, kind EventKind, edit func(*Host) string) {
	host := ""
	if i >= 0 {
		host = f.ms[i].name
	}
	f.eventState(kind, host, func(st *State) string {
		if i < 0 {
			return ""
		}
		return edit(&st.Hosts[i])
	})
}

// eventState edits the state, then publishes the change and the event, in one critical
// section so events reach OnEvent in the order of the changes.
func (f *Fleet) eventState(kind EventKind, host string, edit func(*State) string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	text := edit(&f.st)
	n := 0
	for _, h := range f.st.Hosts {
		if h.Rebooting {
			n++
		}
	}
	f.st.Rebooting = n
	close(f.changed)
	f.changed = make(chan struct{})
	if f.cfg.OnEvent != nil && text != "" {
		f.cfg.OnEvent(Event{At: time.Now(), Host: host, Kind: kind, Text: text, Rebooting: n})
	}
}

// followHolders keeps State.Holders and Max current from an etcd watch of the group's keys.
func (f *Fleet) followHolders(ctx context.Context) {
	for ctx.Err() == nil {
		st, err := f.store.State(ctx, f.cfg.Group)
		if err != nil {
			f.cfg.Logger.Warn("fleet: read the reboot semaphore", "error", err)
			select {
			case <-time.After(f.cfg.CheckInterval):
			case <-ctx.Done():
			}
			continue
		}
		f.setHolders(st)
		wctx, cancel := context.WithCancel(ctx)
		wch := f.cfg.Etcd.Watch(wctx, f.store.GroupKeyPrefix(f.cfg.Group), clientv3.WithPrefix(), clientv3.WithRev(st.Revision+1))
		for resp := range wch {
			if resp.Err() != nil {
				break
			}
			if st, err = f.store.State(ctx, f.cfg.Group); err != nil {
				break
			}
			f.setHolders(st)
		}
		cancel()
	}
}

func (f *Fleet) setHolders(st locksmith.State) {
	key := func(ss []locksmith.Slot, max int) string {
		b := fmt.Sprint(max)
		for _, s := range ss {
			b += fmt.Sprintf(";%s/%s/%s", s.Holder.ID, s.Holder.State, s.Holder.ToVersion)
		}
		return b
	}
	f.eventState(EventHolders, "", func(s *State) string {
		if key(s.Holders, s.Max) == key(st.Slots, st.Config.Max) {
			return ""
		}
		s.Holders, s.Max = st.Slots, st.Config.Max
		return s.HoldersText()
	})
}

// HoldersText describes the holders: "reboot slots 1/2: host-3 (→1.0.2, rolled-back)".
func (s State) HoldersText() string {
	var parts []string
	for _, sl := range s.Holders {
		d := s.HolderName(sl)
		var extra []string
		if sl.Holder.ToVersion != "" {
			extra = append(extra, "→"+sl.Holder.ToVersion)
		}
		if sl.Holder.State != "" {
			extra = append(extra, string(sl.Holder.State))
		}
		if len(extra) > 0 {
			d += " (" + strings.Join(extra, ", ") + ")"
		}
		parts = append(parts, d)
	}
	out := fmt.Sprintf("reboot slots %d/%d", len(s.Holders), s.Max)
	if len(parts) > 0 {
		out += ": " + strings.Join(parts, ", ")
	}
	return out
}

// HolderName is the host name of a slot holder (its machine id when it is not in the fleet).
func (s State) HolderName(sl locksmith.Slot) string {
	for _, h := range s.Hosts {
		if h.MachineID == sl.Holder.ID {
			return h.Name
		}
	}
	return sl.Holder.ID
}

// operation shortens a dbusapi operation: UPDATE_STATUS_IDLE → idle.
func operation(op string) string {
	return strings.ToLower(strings.TrimPrefix(op, "UPDATE_STATUS_"))
}
