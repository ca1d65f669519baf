package updated

import (
	"fmt"
	"time"
)

// State is a state of the agent's persisted state machine. The values are stable strings: they
// are written to the state file.
type State string

// The states. The first eight are update_engine's (their D-Bus names are "UPDATE_STATUS_" + the
// value); Committing, RollingBack and Resetting are twinslot's internal steps whose side effects
// (GPT writes) must be persisted before they run. They are shown on D-Bus as VERIFYING,
// REPORTING_ERROR_EVENT and IDLE.
const (
	Idle                State = "IDLE"
	CheckingForUpdate   State = "CHECKING_FOR_UPDATE"
	UpdateAvailable     State = "UPDATE_AVAILABLE"
	Downloading         State = "DOWNLOADING"
	Finalizing          State = "FINALIZING"
	UpdatedNeedReboot   State = "UPDATED_NEED_REBOOT"
	ReportingErrorEvent State = "REPORTING_ERROR_EVENT"
	Verifying           State = "VERIFYING"
	Committing          State = "COMMITTING"
	RollingBack         State = "ROLLING_BACK"
	Resetting           State = "RESETTING"
)

// States lists every state, in lifecycle order.
var States = []State{Idle, CheckingForUpdate, UpdateAvailable, Downloading, Finalizing,
	UpdatedNeedReboot, ReportingErrorEvent, Verifying, Committing, RollingBack, Resetting}

// Valid reports whether s is a known state.
func (s State) Valid() bool {
	for _, k := range States {
		if s == k {
			return true
		}
	}
	return false
}

// Operation is the update_engine current_operation string shown on D-Bus for s.
func (s State) Operation() string {
	switch s {
	case Committing:
		s = Verifying
	case RollingBack:
		s = ReportingErrorEvent
	case Resetting:
		s = Idle
	}
	return "UPDATE_STATUS_" + string(s)
}

// Boot states of the io.twinslot.Updated1 interface (see the D-Bus contract).
const (
	BootVerifying  = "verifying"
	BootCommitted  = "committed"
	BootRolledBack = "rolled-back"
	BootSteady     = "steady"
)

// BootStatus is what the agent knows about the current boot.
type BootStatus struct {
	State           string `json:"state"`
	BootedVersion   string `json:"booted_version"`
	PreviousVersion string `json:"previous_version"`
	Slot            string `json:"slot"`
}

// Offer is an update the Omaha server offered.
type Offer struct {
	Version string   `json:"version"`
	URLs    []string `json:"urls"` // full payload URLs, in order of preference
	Name    string   `json:"name"`
	Size    int64    `json:"size"`
	SHA256  string   `json:"sha256,omitempty"` // hex SHA-256 of the whole payload file, when the server sent one
}

// Image describes a payload installed into a slot (from its verified manifest).
type Image struct {
	Version         string `json:"version"`
	SecurityVersion uint64 `json:"security_version"`
	SHA256          string `json:"sha256"` // hex SHA-256 of the slot image
	Size            int64  `json:"size"`
	BytesReused     int64  `json:"bytes_reused"`
	BytesFetched    int64  `json:"bytes_fetched"`
	// KeptUnhealthy: the image failed its health gate and its slot was committed anyway because
	// the rollback was refused (OutcomeKept). It never raises the anti-rollback floor.
	KeptUnhealthy bool `json:"kept_unhealthy,omitempty"`
}

// Failure is an error reported to the Omaha server as event 3/0.
type Failure struct {
	Code    int    `json:"code"` // Omaha errorcode
	Message string `json:"message"`
	Step    State  `json:"step"` // the state that failed
}

// Attempt outcomes.
const (
	OutcomeInProgress  = ""
	OutcomeInstalled   = "installed"   // written to the slot and made the next boot; waiting for a reboot
	OutcomeCommitted   = "committed"   // booted, health gate passed, marked good
	OutcomeRolledBack  = "rolled-back" // booted and failed (health gate or boot), back on the old slot
	OutcomeFailed      = "failed"      // failed before the reboot; the running slot was never touched
	OutcomeCancelled   = "cancelled"   // ResetStatus undid an installed update
	OutcomeInterrupted = "interrupted" // abandoned because the host booted something else meanwhile
	OutcomeKept        = "kept-unhealthy"
)

// Attempt is one update attempt: from an offer to its final outcome.
type Attempt struct {
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished,omitzero"`
	FromVersion string    `json:"from_version"`
	ToVersion   string    `json:"to_version"`
	TargetSlot  string    `json:"target_slot,omitempty"`
	Offer       *Offer    `json:"offer,omitempty"`
	Image       *Image    `json:"image,omitempty"`
	Outcome     string    `json:"outcome"`
	ErrorCode   int       `json:"error_code,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// RollbackReport is a rollback waiting to be reported to the server (event 3/0/44).
type RollbackReport struct {
	FailedVersion string `json:"failed_version"`
	FellBackTo    string `json:"fell_back_to"`
}

// FormatVersion is the version of the state file format. An agent reading a newer major format
// starts afresh from the disk's GPT (see Store.Load).
const FormatVersion = 1

// MaxHistory bounds the attempts kept in the state file.
const MaxHistory = 50

// Record is the agent's persisted state. Every field is written to the state file before the
// side effects of State run, so that after a crash the agent can re-enter State.
type Record struct {
	Version int       `json:"version"`
	State   State     `json:"state"`
	Seq     uint64    `json:"seq"`     // number of transitions so far
	BootID  string    `json:"boot_id"` // the boot during which State was entered
	Changed time.Time `json:"changed"` // when State was entered

	AlephVersion string    `json:"aleph_version,omitempty"` // the version first installed on this host
	LastChecked  time.Time `json:"last_checked,omitzero"`
	Failures     int       `json:"failures"` // consecutive failed checks/attempts, for backoff

	// PrevVersionPref is update_engine's "previous-version" pref: "0.0.0.0" before the first
	// check, "" after each delivered check, the old running version from the moment an install
	// enters FINALIZING (before the flip) until a check delivers it.
	PrevVersionPref string          `json:"prev_version_pref"`
	Rollback        *RollbackReport `json:"rollback,omitempty"` // a rollback not yet reported

	Attempt   *Attempt   `json:"attempt,omitempty"`    // the update in progress
	Failure   *Failure   `json:"failure,omitempty"`    // a failure being reported (ReportingErrorEvent, RollingBack)
	LastError *Failure   `json:"last_error,omitempty"` // the last reported failure, for status
	Boot      BootStatus `json:"boot"`                 // status of the boot BootID

	// GateUptime is the boot's uptime (Host.Uptime, CLOCK_BOOTTIME) when the health gate of the
	// boot BootID started (VERIFYING only; zero otherwise). Resume sets it when a boot enters
	// VERIFYING and keeps it across restarts of the agent within that boot, so an agent that
	// crash-loops or is restarted gets only what is left of the deadline; a new boot starts
	// afresh. Uptime, not the wall clock: every process of the boot reads the same clock, and
	// a step of the wall clock (a time sync after boot) neither ends nor extends a trial.
	// Optional: a record without it (an older agent's) loads, and an older agent ignores it.
	GateUptime time.Duration `json:"gate_uptime,omitzero"`

	// SlotImages remembers what was installed in each slot (label → image), for the floor and
	// the PCR measurement when that slot is booted.
	SlotImages map[string]Image `json:"slot_images,omitempty"`
	// MeasuredBootID is the boot in which the booted image was extended into the PCR.
	MeasuredBootID string `json:"measured_boot_id,omitempty"`

	// BadVersions are versions that failed on this host (health gate or boot); the agent does
	// not install them again until ResetStatus. Bounded by MaxBadVersions.
	BadVersions []string `json:"bad_versions,omitempty"`

	History []Attempt `json:"history,omitempty"` // finished attempts, oldest first
}

// MaxBadVersions bounds Record.BadVersions.
const MaxBadVersions = 16

// IsBad reports whether version failed on this host before.
func (r Record) IsBad(version string) bool {
	for _, v := range r.BadVersions {
		if v == version {
			return true
		}
	}
	return false
}

func (n *Record) addBad(version string) {
	if version == "" || n.IsBad(version) {
		return
	}
	n.BadVersions = append(n.BadVersions, version)
	if len(n.BadVersions) > MaxBadVersions {
		n.BadVersions = append([]string(nil), n.BadVersions[len(n.BadVersions)-MaxBadVersions:]...)
	}
}

// NewRecord is the record of a host that has never run the agent.
func NewRecord() Record {
	return Record{Version: FormatVersion, State: Idle, PrevVersionPref: "0.0.0.0"}
}

// EventKind says what happened in a state.
type EventKind int

// Events.
const (
	EvCheckDue        EventKind = iota + 1 // Idle: time to check (or AttemptUpdate)
	EvNoUpdate                             // CheckingForUpdate: server said noupdate
	EvUpdateFound                          // CheckingForUpdate: server offered Event.Offer
	EvDownloadStarted                      // UpdateAvailable: 13/1 sent, Event.Target chosen
	EvDownloaded                           // Downloading: Event.Image installed and verified
	EvInstalled                            // Finalizing: the slot is the next boot; 3/1 sent
	EvFailed                               // an update step failed with Event.Failure
	EvReported                             // ReportingErrorEvent: 3/0 sent (or tried)
	EvReset                                // ResetStatus from Idle or UpdatedNeedReboot
	EvResetDone                            // Resetting: the installed slot no longer boots next
	EvHealthy                              // Verifying: the health gate passed
	EvUnhealthy                            // Verifying: the health gate failed with Event.Failure
	EvCommitted                            // Committing: marked good (floor advanced, PCR extended)
	EvRollbackRefused                      // RollingBack: the old slot is not usable; keep this one
)

var eventNames = map[EventKind]string{
	EvCheckDue: "check-due", EvNoUpdate: "no-update", EvUpdateFound: "update-found",
	EvDownloadStarted: "download-started", EvDownloaded: "downloaded", EvInstalled: "installed",
	EvFailed: "failed", EvReported: "reported", EvReset: "reset", EvResetDone: "reset-done",
	EvHealthy: "healthy", EvUnhealthy: "unhealthy", EvCommitted: "committed",
	EvRollbackRefused: "rollback-refused",
}

func (k EventKind) String() string {
	if n, ok := eventNames[k]; ok {
		return n
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is the outcome of a state's side effects, the input of Transition.
type Event struct {
	Kind EventKind
	Now  time.Time

	Delivered     bool     // a check exchange reached the server: the pending reports were sent
	Offer         *Offer   // EvUpdateFound
	Target        string   // EvDownloadStarted: the slot label being written
	Image         *Image   // EvDownloaded
	Failure       *Failure // EvFailed, EvUnhealthy, EvRollbackRefused
	BootedVersion string   // EvUpdateFound: the running version
}

// ErrTransition is returned for an event that is not allowed in a state.
type ErrTransition struct {
	From  State
	Event EventKind
}

func (e *ErrTransition) Error() string {
	return fmt.Sprintf("updated: event %s is not allowed in state %s", e.Event, e.From)
}

// Transition is the state machine: it returns the record after ev happened in r.State. It is
// pure (no I/O, no clock) so every path can be tested and replayed; r is not modified.
func Transition(r Record, ev Event) (Record, error) {
	n := r.clone()
	bad := &ErrTransition{From: r.State, Event: ev.Kind}
	to := func(s State) (Record, error) {
		n.State = s
		n.Seq++
		n.Changed = ev.Now
		return n, nil
	}
	switch r.State {
	case Idle:
		switch ev.Kind {
		case EvCheckDue:
			return to(CheckingForUpdate)
		case EvReset:
			n.Failures = 0
			n.LastError = nil
			n.BadVersions = nil
			return to(Idle)
		}
	case CheckingForUpdate:
		if ev.Delivered {
			n.PrevVersionPref = ""
			n.Rollback = nil
			n.LastChecked = ev.Now
		}
		switch ev.Kind {
		case EvNoUpdate:
			n.LastChecked = ev.Now
			n.Failures = 0
			return to(Idle)
		case EvUpdateFound:
			if ev.Offer == nil {
				return Record{}, fmt.Errorf("updated: %s without an offer", ev.Kind)
			}
			n.LastChecked = ev.Now
			o := *ev.Offer
			n.Attempt = &Attempt{Started: ev.Now, FromVersion: ev.BootedVersion, ToVersion: o.Version, Offer: &o}
			return to(UpdateAvailable)
		case EvFailed:
			return n.fail(ev, to)
		}
	case UpdateAvailable:
		switch ev.Kind {
		case EvDownloadStarted:
			if ev.Target == "" || n.Attempt == nil {
				return Record{}, fmt.Errorf("updated: %s without a target slot or attempt", ev.Kind)
			}
			n.Attempt.TargetSlot = ev.Target
			return to(Downloading)
		case EvFailed:
			return n.fail(ev, to)
		}
	case Downloading:
		switch ev.Kind {
		case EvDownloaded:
			if ev.Image == nil || n.Attempt == nil {
				return Record{}, fmt.Errorf("updated: %s without an image or attempt", ev.Kind)
			}
			img := *ev.Image
			n.Attempt.Image = &img
			// FINALIZING makes the slot the next boot. Record what the slot holds and the version
			// to report after the commit before that flip, so that a stop or a power loss right
			// after it still advances the floor and reports the update complete.
			if n.SlotImages == nil {
				n.SlotImages = make(map[string]Image)
			}
			n.SlotImages[n.Attempt.TargetSlot] = img
			n.PrevVersionPref = n.Attempt.FromVersion
			return to(Finalizing)
		case EvFailed:
			return n.fail(ev, to)
		}
	case Finalizing:
		switch ev.Kind {
		case EvInstalled:
			n.Attempt.Outcome = OutcomeInstalled
			return to(UpdatedNeedReboot)
		case EvFailed:
			return n.fail(ev, to)
		}
	case UpdatedNeedReboot:
		if ev.Kind == EvReset {
			return to(Resetting)
		}
	case Resetting:
		if ev.Kind == EvResetDone {
			n.PrevVersionPref = ""
			n.finish(ev.Now, OutcomeCancelled, nil)
			return to(Idle)
		}
	case ReportingErrorEvent:
		if ev.Kind == EvReported {
			n.Failures++
			n.LastError = n.Failure
			n.Failure = nil
			return to(Idle)
		}
	case Verifying:
		n.GateUptime = 0 // the gate is over
		switch ev.Kind {
		case EvHealthy:
			return to(Committing)
		case EvUnhealthy:
			if ev.Failure == nil {
				return Record{}, fmt.Errorf("updated: %s without a failure", ev.Kind)
			}
			f := *ev.Failure
			f.Step = Verifying
			n.Failure = &f
			n.Boot.State = BootRolledBack
			n.Boot.PreviousVersion = n.Boot.BootedVersion
			n.addBad(n.Boot.BootedVersion)
			return to(RollingBack)
		}
	case Committing:
		if ev.Kind == EvCommitted {
			switch {
			case n.Boot.State == BootRolledBack:
				// This boot is the old slot after a rollback (Resume): that is what was committed.
				// Decided from the boot, not from the report, which stays pending until a check
				// delivers it (never, on a host that does not talk to a server).
				n.finish(ev.Now, OutcomeRolledBack, n.Failure)
				n.LastError = n.Failure
			case n.Failure != nil: // kept an unhealthy slot: nothing else boots
				n.finish(ev.Now, OutcomeKept, n.Failure)
				n.LastError = n.Failure
				n.Boot.State = BootCommitted
				n.PrevVersionPref = "" // 3/0 was reported; never report this update complete
			default:
				n.finish(ev.Now, OutcomeCommitted, nil)
				n.Boot.State = BootCommitted
			}
			n.Failure = nil
			return to(Idle)
		}
	case RollingBack:
		if ev.Kind == EvRollbackRefused {
			if ev.Failure != nil {
				f := *ev.Failure
				n.Failure = &f
			}
			// The slot is committed although it failed its gate: remember that before MarkGood,
			// so that no later start raises the floor to its security version.
			if img, ok := n.SlotImages[n.Boot.Slot]; ok {
				img.KeptUnhealthy = true
				n.SlotImages[n.Boot.Slot] = img
			}
			n.Boot.State = BootVerifying // this boot stays: it did not roll back
			return to(Committing)
		}
	}
	return Record{}, bad
}

// fail moves an update step's failure to ReportingErrorEvent.
func (n *Record) fail(ev Event, to func(State) (Record, error)) (Record, error) {
	if ev.Failure == nil {
		return Record{}, fmt.Errorf("updated: %s without a failure", ev.Kind)
	}
	f := *ev.Failure
	f.Step = n.State
	n.Failure = &f
	if n.State == Finalizing {
		// The slot did not become the next boot: there is no previous version to report.
		n.PrevVersionPref = ""
	}
	n.finish(ev.Now, OutcomeFailed, &f)
	return to(ReportingErrorEvent)
}

// finish closes the current attempt with outcome and moves it to the history.
func (n *Record) finish(now time.Time, outcome string, f *Failure) {
	if n.Attempt == nil {
		return
	}
	a := *n.Attempt
	a.Finished = now
	a.Outcome = outcome
	if f != nil {
		a.ErrorCode, a.Error = f.Code, f.Message
	}
	n.History = append(n.History, a)
	if len(n.History) > MaxHistory {
		n.History = append([]Attempt(nil), n.History[len(n.History)-MaxHistory:]...)
	}
	n.Attempt = nil
}

// clone returns a deep copy, so Transition never aliases its input.
func (r Record) clone() Record {
	n := r
	if r.Rollback != nil {
		v := *r.Rollback
		n.Rollback = &v
	}
	if r.Attempt != nil {
		a := *r.Attempt
		if a.Offer != nil {
			o := *a.Offer
			o.URLs = append([]string(nil), o.URLs...)
			a.Offer = &o
		}
		if a.Image != nil {
			i := *a.Image
			a.Image = &i
		}
		n.Attempt = &a
	}
	if r.Failure != nil {
		f := *r.Failure
		n.Failure = &f
	}
	if r.LastError != nil {
		f := *r.LastError
		n.LastError = &f
	}
	if r.SlotImages != nil {
		n.SlotImages = make(map[string]Image, len(r.SlotImages))
		for k, v := range r.SlotImages {
			n.SlotImages[k] = v
		}
	}
	n.History = append([]Attempt(nil), r.History...)
	n.BadVersions = append([]string(nil), r.BadVersions...)
	return n
}

// BootFacts is what the agent learns about the current boot at start-up.
type BootFacts struct {
	BootID     string
	Slot       string // booted slot label
	Version    string // version of the booted /usr
	Successful bool   // the booted slot's successful bit
	// TargetTried: the attempt's target slot (when it is not the booted one) was tried by the
	// boot loader and failed (priority > 0, tries 0, not successful). Only read for Finalizing.
	TargetTried bool
	Now         time.Time
	Uptime      time.Duration // Host.Uptime: times the health gate across restarts of the agent
}

// Resume decides where the agent continues after a start. The same boot continues the recorded
// state (every state is re-entrant). A new boot is classified from the GPT and the record:
//
//   - the booted slot is on trial (successful=0) → Verifying (the health gate), unless it is an
//     update cancelled by ResetStatus (Resetting): then Resetting, which takes it back;
//   - back on the old slot after a new one reached the boot order → a rollback: Committing the
//     old slot, then report 3/0/44;
//   - on the new slot, already marked good (a commit cut by power loss) → Committing;
//   - an update cut by the reboot before its slot reached the boot order → continue it;
//   - otherwise a steady boot.
//
// Resume is pure.
func Resume(r Record, f BootFacts) Record {
	n := r.clone()
	if n.Version == 0 {
		n.Version = FormatVersion
	}
	if n.AlephVersion == "" {
		n.AlephVersion = f.Version
	}
	set := func(s State) Record {
		if n.State != s {
			n.State = s
			n.Seq++
			n.Changed = f.Now
		}
		n.BootID = f.BootID
		return n
	}
	if r.BootID == f.BootID && r.BootID != "" {
		n.Boot.BootedVersion, n.Boot.Slot = f.Version, f.Slot
		// A restart of the agent during the health gate keeps the gate's start, so the deadline
		// is not extended. A start missing (a record written without it) or later than now
		// (which one boot's uptime never is) counts from now: the gate then gets at most one
		// deadline more, never an unbounded one.
		if n.State == Verifying && (n.GateUptime <= 0 || n.GateUptime > f.Uptime) {
			n.GateUptime = f.Uptime
		}
		return n
	}
	n.GateUptime = 0 // a new boot: its gate, if any, starts afresh

	// A new boot. The slot that was on trial or about to be: the attempt's target, or (for an
	// image installed by hand) the slot the previous boot was verifying.
	a := n.Attempt
	trial, trialVersion, from := "", "", ""
	switch {
	case a != nil:
		trial, trialVersion, from = a.TargetSlot, a.ToVersion, a.FromVersion
		if a.Image != nil && a.Image.Version != "" {
			trialVersion = a.Image.Version
		}
	case r.State == Verifying || r.State == Committing || r.State == RollingBack:
		trial, trialVersion, from = r.Boot.Slot, r.Boot.BootedVersion, r.Boot.PreviousVersion
	}
	onTrial := trial != "" && trial == f.Slot
	pastPrepare := false // the trial slot was in the boot order before this boot
	switch r.State {
	case UpdatedNeedReboot, Verifying, Committing, RollingBack:
		pastPrepare = true
	case Finalizing:
		pastPrepare = f.TargetTried
	}
	n.Boot = BootStatus{State: BootSteady, BootedVersion: f.Version, Slot: f.Slot}

	switch {
	case r.State == Resetting && onTrial && !f.Successful:
		// The update was cancelled, but the host lost power before its slot was made unbootable,
		// and the boot loader tried it. It is no update to verify and commit: RESETTING goes on,
		// marks the slot bad and reboots into the old one. The boot is on trial until then.
		n.Failure = nil
		n.Boot = BootStatus{State: BootVerifying, BootedVersion: f.Version, PreviousVersion: from, Slot: f.Slot}
		return set(Resetting)

	case !f.Successful:
		// A slot on trial: run the health gate.
		if a != nil && !onTrial {
			n.finish(f.Now, OutcomeInterrupted, &Failure{Message: "the host booted " + f.Slot + " instead of " + trial})
			from = ""
		}
		n.Failure = nil
		n.Boot = BootStatus{State: BootVerifying, BootedVersion: f.Version, PreviousVersion: from, Slot: f.Slot}
		n.GateUptime = f.Uptime
		return set(Verifying)

	case trial != "" && !onTrial && pastPrepare:
		// Back on the old slot after the new one was in the boot order: a rollback.
		n.Rollback = &RollbackReport{FailedVersion: trialVersion, FellBackTo: f.Version}
		n.addBad(trialVersion)
		n.PrevVersionPref = ""
		// The failure that made the previous boot roll back (RollingBack, or the old slot's
		// commit cut by a power loss) is the reason; only an unexplained fall-back gets code 44.
		known := r.State == RollingBack || r.State == Committing && r.Boot.State == BootRolledBack
		if !known || n.Failure == nil {
			n.Failure = &Failure{Code: CodeRollback, Step: r.State, Message: fmt.Sprintf(
				"version %s was not marked good before the host rebooted; running %s again", trialVersion, f.Version)}
		}
		n.Boot = BootStatus{State: BootRolledBack, BootedVersion: f.Version, PreviousVersion: trialVersion, Slot: f.Slot}
		return set(Committing)

	case onTrial:
		// On the new slot, already marked good (a commit cut by power loss, or marked good by
		// hand): finish the commit. A slot kept although it failed its gate (its failure was
		// reported) keeps that failure, so it is finished as kept, never as committed.
		if r.State != Committing || r.Boot.State != BootVerifying {
			n.Failure = nil
		}
		n.Boot = BootStatus{State: BootVerifying, BootedVersion: f.Version, PreviousVersion: from, Slot: f.Slot}
		return set(Committing)

	case a != nil && (r.State == Finalizing || r.State == Resetting || r.State == UpdateAvailable ||
		r.State == Downloading || r.State == CheckingForUpdate):
		// An update cut by the reboot before its slot was tried: continue where it was (the
		// payload install reuses what the target slot already holds; Resetting is idempotent).
		return set(r.State)

	case r.State == ReportingErrorEvent:
		return set(ReportingErrorEvent)

	default:
		if a != nil {
			n.finish(f.Now, OutcomeInterrupted, &Failure{Message: "interrupted by a reboot in state " + string(r.State)})
		}
		n.Failure = nil
		return set(Idle)
	}
}
