package updated

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func offer() *Offer {
	return &Offer{Version: "2.0.0", URLs: []string{"http://127.0.0.1/p.tsp"}, Name: "p.tsp", Size: 100}
}

func image() *Image {
	return &Image{Version: "2.0.0", SecurityVersion: 3, SHA256: "ab", Size: 50}
}

func fail(code int) *Failure { return &Failure{Code: code, Message: "boom"} }

func TestTransitionRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state State
		ev    Event
	}{
		{"check while downloading", Downloading, Event{Kind: EvCheckDue}},
		{"install from idle", Idle, Event{Kind: EvInstalled}},
		{"reset while downloading", Downloading, Event{Kind: EvReset}},
		{"reset while verifying", Verifying, Event{Kind: EvReset}},
		{"update found without offer", CheckingForUpdate, Event{Kind: EvUpdateFound}},
		{"downloaded without image", Downloading, Event{Kind: EvDownloaded}},
		{"failed without failure", Downloading, Event{Kind: EvFailed}},
		{"unhealthy without failure", Verifying, Event{Kind: EvUnhealthy}},
		{"commit while idle", Idle, Event{Kind: EvCommitted}},
		{"healthy while need reboot", UpdatedNeedReboot, Event{Kind: EvHealthy}},
		{"reported while idle", Idle, Event{Kind: EvReported}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRecord()
			r.State = tc.state
			r.Attempt = &Attempt{Offer: offer(), TargetSlot: "USR-B"}
			before := r.clone()
			if _, err := Transition(r, tc.ev); err == nil {
				t.Fatalf("Transition(%s, %s) succeeded", tc.state, tc.ev.Kind)
			}
			if !reflect.DeepEqual(r, before) {
				t.Fatal("Transition modified its input")
			}
		})
	}
	var te *ErrTransition
	r := NewRecord()
	if _, err := Transition(r, Event{Kind: EvInstalled}); !errors.As(err, &te) || te.From != Idle {
		t.Fatalf("want *ErrTransition from IDLE, got %v", err)
	}
}

// run applies events from r and returns the final record and the chain of states.
func run(t *testing.T, r Record, evs ...Event) (Record, []State) {
	t.Helper()
	chain := []State{r.State}
	for _, ev := range evs {
		if ev.Now.IsZero() {
			ev.Now = t0
		}
		n, err := Transition(r, ev)
		if err != nil {
			t.Fatalf("after %v: %v", chain, err)
		}
		if n.Seq != r.Seq+1 {
			t.Fatalf("seq %d after %d", n.Seq, r.Seq)
		}
		r = n
		chain = append(chain, r.State)
	}
	return r, chain
}

func sameChain(t *testing.T, got, want []State) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state chain\n got %v\nwant %v", got, want)
	}
}

func updateEvents() []Event {
	return []Event{
		{Kind: EvCheckDue},
		{Kind: EvUpdateFound, Offer: offer(), BootedVersion: "1.0.0", Delivered: true},
		{Kind: EvDownloadStarted, Target: "USR-B"},
		{Kind: EvDownloaded, Image: image()},
		{Kind: EvInstalled},
	}
}

func TestTransitionUpdate(t *testing.T) {
	r, chain := run(t, NewRecord(), updateEvents()...)
	sameChain(t, chain, []State{Idle, CheckingForUpdate, UpdateAvailable, Downloading, Finalizing, UpdatedNeedReboot})
	if r.PrevVersionPref != "1.0.0" {
		t.Errorf("previous-version pref = %q, want the old running version", r.PrevVersionPref)
	}
	if r.Attempt == nil || r.Attempt.Outcome != OutcomeInstalled || r.Attempt.TargetSlot != "USR-B" {
		t.Errorf("attempt = %+v", r.Attempt)
	}
	if img, ok := r.SlotImages["USR-B"]; !ok || img.SecurityVersion != 3 {
		t.Errorf("slot image not remembered: %+v", r.SlotImages)
	}

	// ResetStatus undoes it.
	r2, chain := run(t, r, Event{Kind: EvReset}, Event{Kind: EvResetDone})
	sameChain(t, chain, []State{UpdatedNeedReboot, Resetting, Idle})
	if r2.Attempt != nil || len(r2.History) != 1 || r2.History[0].Outcome != OutcomeCancelled || r2.PrevVersionPref != "" {
		t.Errorf("after reset: attempt %+v history %+v pref %q", r2.Attempt, r2.History, r2.PrevVersionPref)
	}
}

func TestTransitionFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		at       int // number of update events applied before the failure
		wantPref string
	}{
		{"check", 1, "0.0.0.0"},
		{"before download", 2, ""},
		{"download", 3, ""},
		{"finalize", 4, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := run(t, NewRecord(), updateEvents()[:tc.at]...)
			failedIn := r.State
			r, chain := run(t, r, Event{Kind: EvFailed, Failure: fail(CodeDownloadWriteError)}, Event{Kind: EvReported})
			sameChain(t, chain, []State{failedIn, ReportingErrorEvent, Idle})
			if r.Failures != 1 || r.LastError == nil || r.LastError.Step != failedIn || r.LastError.Code != CodeDownloadWriteError {
				t.Errorf("failures %d last error %+v", r.Failures, r.LastError)
			}
			if r.PrevVersionPref != tc.wantPref {
				t.Errorf("previous-version pref %q, want %q", r.PrevVersionPref, tc.wantPref)
			}
			if failedIn != CheckingForUpdate {
				if len(r.History) != 1 || r.History[0].Outcome != OutcomeFailed || r.History[0].ErrorCode != CodeDownloadWriteError {
					t.Errorf("history %+v", r.History)
				}
			}
			// A later successful check resets the backoff.
			r, _ = run(t, r, Event{Kind: EvCheckDue}, Event{Kind: EvNoUpdate, Delivered: true})
			if r.Failures != 0 {
				t.Errorf("failures %d after a good check", r.Failures)
			}
		})
	}
}

func TestTransitionVerify(t *testing.T) {
	installed, _ := run(t, NewRecord(), updateEvents()...)
	installed.BootID = "boot-1"
	booted := Resume(installed, BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0", Now: t0})
	if booted.State != Verifying || booted.Boot != (BootStatus{BootVerifying, "2.0.0", "1.0.0", "USR-B"}) {
		t.Fatalf("after reboot into the new slot: %s %+v", booted.State, booted.Boot)
	}

	t.Run("healthy", func(t *testing.T) {
		r, chain := run(t, booted, Event{Kind: EvHealthy}, Event{Kind: EvCommitted})
		sameChain(t, chain, []State{Verifying, Committing, Idle})
		if r.Boot.State != BootCommitted || len(r.History) != 1 || r.History[0].Outcome != OutcomeCommitted {
			t.Fatalf("boot %+v history %+v", r.Boot, r.History)
		}
		if r.PrevVersionPref != "1.0.0" {
			t.Fatalf("the first check after commit must send previousversion=1.0.0, pref is %q", r.PrevVersionPref)
		}
		r, _ = run(t, r, Event{Kind: EvCheckDue}, Event{Kind: EvNoUpdate, Delivered: true})
		if r.PrevVersionPref != "" {
			t.Fatalf("pref %q after a delivered check", r.PrevVersionPref)
		}
	})

	t.Run("unhealthy", func(t *testing.T) {
		r, chain := run(t, booted, Event{Kind: EvUnhealthy, Failure: fail(CodeHealthGateFailed)})
		sameChain(t, chain, []State{Verifying, RollingBack})
		if r.Boot != (BootStatus{BootRolledBack, "2.0.0", "2.0.0", "USR-B"}) {
			t.Fatalf("boot status while the rollback reboot is pending: %+v", r.Boot)
		}
		r.BootID = "boot-2"
		// The reboot lands on the old slot.
		old := Resume(r, BootFacts{BootID: "boot-3", Slot: "USR-A", Version: "1.0.0", Successful: true, Now: t0})
		if old.State != Committing || old.Rollback == nil || *old.Rollback != (RollbackReport{"2.0.0", "1.0.0"}) {
			t.Fatalf("after the rollback reboot: %s %+v", old.State, old.Rollback)
		}
		if old.Boot != (BootStatus{BootRolledBack, "1.0.0", "2.0.0", "USR-A"}) {
			t.Fatalf("boot status %+v", old.Boot)
		}
		r, chain = run(t, old, Event{Kind: EvCommitted})
		sameChain(t, chain, []State{Committing, Idle})
		if len(r.History) != 1 || r.History[0].Outcome != OutcomeRolledBack || r.History[0].ErrorCode != CodeHealthGateFailed {
			t.Fatalf("history %+v", r.History)
		}
		if r.Rollback == nil || r.Boot.State != BootRolledBack {
			t.Fatal("the rollback report must stay pending until a check delivers it")
		}
		r, _ = run(t, r, Event{Kind: EvCheckDue}, Event{Kind: EvFailed, Failure: fail(2503)})
		if r.Rollback == nil {
			t.Fatal("a failed check dropped the rollback report")
		}
		r, _ = run(t, r, Event{Kind: EvReported}, Event{Kind: EvCheckDue}, Event{Kind: EvNoUpdate, Delivered: true})
		if r.Rollback != nil {
			t.Fatal("a delivered check kept the rollback report")
		}
	})

	t.Run("rollback refused", func(t *testing.T) {
		r, chain := run(t, booted, Event{Kind: EvUnhealthy, Failure: fail(CodeHealthGateFailed)},
			Event{Kind: EvRollbackRefused, Failure: fail(CodeHealthGateFailed)}, Event{Kind: EvCommitted})
		sameChain(t, chain, []State{Verifying, RollingBack, Committing, Idle})
		if r.Boot.State != BootCommitted || r.History[0].Outcome != OutcomeKept || r.PrevVersionPref != "" {
			t.Fatalf("boot %+v history %+v pref %q", r.Boot, r.History, r.PrevVersionPref)
		}
		if img := r.SlotImages["USR-B"]; !img.KeptUnhealthy {
			t.Fatalf("the kept image is not marked (it would raise the floor at the next start): %+v", img)
		}
	})

	// A rollback report of an earlier attempt, never delivered (SERVER=disabled): the commit of
	// this boot is decided from the boot, and the report stays pending for the server.
	t.Run("earlier rollback not reported yet", func(t *testing.T) {
		pending := booted.clone()
		pending.Rollback = &RollbackReport{FailedVersion: "1.5.0", FellBackTo: "1.0.0"}
		for _, tc := range []struct {
			name    string
			evs     []Event
			outcome string
		}{
			{"healthy", []Event{{Kind: EvHealthy}, {Kind: EvCommitted}}, OutcomeCommitted},
			{"rollback refused", []Event{{Kind: EvUnhealthy, Failure: fail(CodeHealthGateFailed)},
				{Kind: EvRollbackRefused, Failure: fail(CodeHealthGateFailed)}, {Kind: EvCommitted}}, OutcomeKept},
		} {
			r, _ := run(t, pending, tc.evs...)
			if r.Boot.State != BootCommitted || r.History[0].Outcome != tc.outcome {
				t.Errorf("%s: boot %+v outcome %q; want committed, %q", tc.name, r.Boot, r.History[0].Outcome, tc.outcome)
			}
			if r.Rollback == nil || *r.Rollback != *pending.Rollback {
				t.Errorf("%s: the pending rollback report is now %+v", tc.name, r.Rollback)
			}
		}
	})
}

// FINALIZING flips the GPT, then sends 3/1 and only then persists UPDATED_NEED_REBOOT. What the
// commit of the new slot needs (its image, for the floor and the PCR, and the version to report
// as previousversion) is in the record before the flip, so a power loss right after the flip
// still commits the new slot fully.
func TestTransitionPowerLossAfterFlip(t *testing.T) {
	finalizing, _ := run(t, NewRecord(), updateEvents()[:4]...)
	if finalizing.State != Finalizing || finalizing.PrevVersionPref != "1.0.0" || finalizing.SlotImages["USR-B"] != *image() {
		t.Fatalf("%s: pref %q slot images %+v; want the new slot's image and 1.0.0 before the flip",
			finalizing.State, finalizing.PrevVersionPref, finalizing.SlotImages)
	}
	finalizing.BootID = "boot-1"
	trial := Resume(finalizing, BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0", Now: t0})
	if trial.State != Verifying || trial.Boot != (BootStatus{BootVerifying, "2.0.0", "1.0.0", "USR-B"}) {
		t.Fatalf("after the power loss: %s %+v", trial.State, trial.Boot)
	}
	r, _ := run(t, trial, Event{Kind: EvHealthy}, Event{Kind: EvCommitted})
	if r.History[0].Outcome != OutcomeCommitted || r.PrevVersionPref != "1.0.0" || r.SlotImages["USR-B"].SecurityVersion != 3 {
		t.Fatalf("history %+v pref %q slot images %+v", r.History, r.PrevVersionPref, r.SlotImages)
	}
}

func TestResume(t *testing.T) {
	at := func(s State, target string) Record {
		r := NewRecord()
		r.State, r.BootID = s, "boot-1"
		r.Boot = BootStatus{BootSteady, "1.0.0", "", "USR-A"}
		r.Attempt = &Attempt{FromVersion: "1.0.0", ToVersion: "2.0.0", TargetSlot: target, Offer: offer()}
		if s == Finalizing || s == UpdatedNeedReboot {
			r.Attempt.Image = image()
		}
		return r
	}
	oldSlot := BootFacts{BootID: "boot-2", Slot: "USR-A", Version: "1.0.0", Successful: true}
	newTrial := BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0"}
	for _, tc := range []struct {
		name     string
		rec      Record
		facts    BootFacts
		want     State
		wantBoot string
		rollback bool
	}{
		{"same boot keeps the state", at(Downloading, "USR-B"), BootFacts{BootID: "boot-1", Slot: "USR-A", Version: "1.0.0", Successful: true}, Downloading, BootSteady, false},
		{"fresh host on a committed slot", NewRecord(), oldSlot, Idle, BootSteady, false},
		{"fresh host on a slot on trial", NewRecord(), newTrial, Verifying, BootVerifying, false},
		{"download cut by a reboot resumes", at(Downloading, "USR-B"), oldSlot, Downloading, BootSteady, false},
		{"finalize cut before the flip resumes", at(Finalizing, "USR-B"), oldSlot, Finalizing, BootSteady, false},
		{"finalize cut after the flip, slot failed to boot", at(Finalizing, "USR-B"), func() BootFacts { f := oldSlot; f.TargetTried = true; return f }(), Committing, BootRolledBack, true},
		{"need reboot, new slot on trial", at(UpdatedNeedReboot, "USR-B"), newTrial, Verifying, BootVerifying, false},
		{"need reboot, back on the old slot", at(UpdatedNeedReboot, "USR-B"), oldSlot, Committing, BootRolledBack, true},
		{"verifying, then power loss: old slot", at(Verifying, "USR-B"), oldSlot, Committing, BootRolledBack, true},
		{"committing, new slot already good", at(Committing, "USR-B"), BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0", Successful: true}, Committing, BootVerifying, false},
		{"reporting an error continues", func() Record { r := at(ReportingErrorEvent, "USR-B"); r.Failure = fail(9); return r }(), oldSlot, ReportingErrorEvent, BootSteady, false},
		{"resetting continues", at(Resetting, "USR-B"), oldSlot, Resetting, BootSteady, false},
		{"resetting, the cancelled slot booted on trial", at(Resetting, "USR-B"), newTrial, Resetting, BootVerifying, false},
		{"a download on a slot that is now booted on trial is dropped", at(Downloading, "USR-A"), BootFacts{BootID: "boot-2", Slot: "USR-A", Version: "3.0.0"}, Verifying, BootVerifying, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.facts.Now = t0
			before := tc.rec.clone()
			got := Resume(tc.rec, tc.facts)
			if !reflect.DeepEqual(tc.rec, before) {
				t.Fatal("Resume modified its input")
			}
			if got.State != tc.want || got.Boot.State != tc.wantBoot || (got.Rollback != nil) != tc.rollback {
				t.Fatalf("Resume = %s boot %+v rollback %+v; want %s, %s, rollback %v",
					got.State, got.Boot, got.Rollback, tc.want, tc.wantBoot, tc.rollback)
			}
			if got.BootID != tc.facts.BootID {
				t.Fatalf("boot id %q", got.BootID)
			}
			if got.AlephVersion == "" {
				t.Fatal("aleph version not recorded")
			}
		})
	}
}

// The health gate's start (the boot's uptime then) is kept across restarts of the agent within
// a boot, so a restart does not extend the deadline, and starts afresh with each boot; a start
// later than now never stands, a wall clock step changes nothing, and the gate's end clears it.
func TestResumeGateStart(t *testing.T) {
	installed, _ := run(t, NewRecord(), updateEvents()...)
	installed.BootID = "boot-1"
	const up0 = 40 * time.Second // the boot's uptime when the agent first resumed
	trial := BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0", Now: t0, Uptime: up0}
	verifying := Resume(installed, trial)
	if verifying.State != Verifying || verifying.GateUptime != up0 {
		t.Fatalf("a boot on trial: %s, gate started at uptime %v; want VERIFYING from %v", verifying.State, verifying.GateUptime, up0)
	}
	at := func(d time.Duration) BootFacts { f := trial; f.Now, f.Uptime = t0.Add(d), up0+d; return f }
	for _, tc := range []struct {
		name  string
		rec   func() Record
		facts BootFacts
		want  time.Duration
	}{
		{"restart in the same boot keeps the start", func() Record { return verifying }, at(90 * time.Second), up0},
		{"restart long after the deadline keeps the start", func() Record { return verifying }, at(48 * time.Hour), up0},
		{"a wall clock step changes nothing", func() Record { return verifying },
			func() BootFacts { f := at(30 * time.Second); f.Now = t0.Add(9 * time.Hour); return f }(), up0},
		{"a start later than now counts from now", func() Record { r := verifying.clone(); r.GateUptime = time.Hour; return r },
			at(time.Minute), up0 + time.Minute},
		{"a record without the start (an older agent's) counts from now", func() Record {
			r := verifying.clone()
			r.GateUptime = 0
			return r
		}, at(time.Minute), up0 + time.Minute},
		{"a new boot on trial starts afresh", func() Record { return verifying },
			func() BootFacts { f := at(90 * time.Second); f.BootID, f.Uptime = "boot-3", 20*time.Second; return f }(), 20 * time.Second},
		{"a new boot on the old slot has no gate", func() Record { return verifying },
			BootFacts{BootID: "boot-3", Slot: "USR-A", Version: "1.0.0", Successful: true, Now: t0.Add(time.Hour), Uptime: time.Minute}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Resume(tc.rec(), tc.facts)
			if got.GateUptime != tc.want {
				t.Fatalf("gate started at uptime %v, want %v (state %s)", got.GateUptime, tc.want, got.State)
			}
		})
	}

	for _, ev := range []Event{{Kind: EvHealthy}, {Kind: EvUnhealthy, Failure: fail(CodeHealthGateFailed)}} {
		r, _ := run(t, verifying, ev)
		if r.GateUptime != 0 {
			t.Errorf("after %s: gate started at uptime %v, want none", ev.Kind, r.GateUptime)
		}
	}

	// What an older agent wrote while verifying (no gate_uptime) loads, and the start is set.
	old := []byte(`{"version":1,"state":"VERIFYING","seq":7,"boot_id":"boot-2","changed":"2026-11-22T10:00:00Z",` +
		`"prev_version_pref":"1.0.0","boot":{"state":"verifying","booted_version":"2.0.0","previous_version":"1.0.0","slot":"USR-B"}}`)
	r, err := ParseRecord(old)
	if err != nil {
		t.Fatal(err)
	}
	if r = Resume(r, at(time.Minute)); r.State != Verifying || r.GateUptime != up0+time.Minute {
		t.Fatalf("an older record resumed: %s, gate started at uptime %v", r.State, r.GateUptime)
	}
}

func TestHistoryBounded(t *testing.T) {
	r := NewRecord()
	for i := 0; i < MaxHistory+7; i++ {
		r, _ = run(t, r, updateEvents()[:3]...)
		r, _ = run(t, r, Event{Kind: EvFailed, Failure: fail(9)}, Event{Kind: EvReported})
	}
	if len(r.History) != MaxHistory {
		t.Fatalf("history has %d entries, want %d", len(r.History), MaxHistory)
	}
}

func TestOperation(t *testing.T) {
	for s, want := range map[State]string{
		Idle: "UPDATE_STATUS_IDLE", Downloading: "UPDATE_STATUS_DOWNLOADING",
		UpdatedNeedReboot: "UPDATE_STATUS_UPDATED_NEED_REBOOT", Committing: "UPDATE_STATUS_VERIFYING",
		RollingBack: "UPDATE_STATUS_REPORTING_ERROR_EVENT", Resetting: "UPDATE_STATUS_IDLE",
	} {
		if got := s.Operation(); got != want {
			t.Errorf("%s.Operation() = %q, want %q", s, got, want)
		}
	}
}
