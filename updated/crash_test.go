package updated_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated"
)

// crash is where drive crashes the agent, once.
type crash struct {
	// afterPersist > 0: the afterPersist-th persisted transition (counted over all runs) is
	// followed by a crash.
	afterPersist int
	// request != "": the agent is stopped while the server handles the first request that log()
	// names so ("event 3/1"), before it answers: a SIGTERM or a power loss in the middle of a
	// state's side effects, after those that came before the request.
	request string
	// power makes the crash a power loss: the host reboots.
	power bool
}

// drive runs the host through an update until the outcome is final: the agent is restarted
// after every crash, the host rebooted when the agent waits for a reboot or asks for one. It
// crashes the agent at c (the zero crash: never). It returns the chain of persisted states and
// the final record.
func drive(t *testing.T, h *host, srv *omahaServer, c crash) ([]updated.State, updated.Record) {
	t.Helper()
	var chain []updated.State
	total, crashed := 0, false
	var (
		mu      sync.Mutex
		current *run
		stopped bool // the crash at c.request happened
	)
	if c.request != "" {
		srv.set(func(s *omahaServer) {
			s.onRequest = func(what string) {
				mu.Lock()
				defer mu.Unlock()
				if what == c.request && !stopped {
					stopped = true
					current.cancel() // the agent never sees the answer
				}
			}
		})
	}
	for runs := 0; runs < 12; runs++ {
		stopAt := 0
		if !crashed && c.afterPersist > total {
			stopAt = c.afterPersist - total
		}
		mu.Lock()
		r := h.start(srv.URL(), fast, stopAt)
		current = r
		mu.Unlock()
		var final *updated.Record
		reboot := false
	loop:
		for {
			select {
			case rec := <-r.states:
				total++
				chain = append(chain, rec.State)
				switch {
				case rec.State == updated.UpdatedNeedReboot:
					reboot = true
					break loop
				case rec.State == updated.Idle && rec.Attempt == nil && rec.PrevVersionPref == "" && rec.Rollback == nil && len(rec.History) > 0:
					final = &rec
					break loop
				}
			case err := <-r.done:
				r.done <- err
				mu.Lock()
				stoppedNow := stopped && !crashed
				mu.Unlock()
				if !errors.Is(err, errCrash) && !(err == nil && stoppedNow) {
					t.Fatalf("agent failed: %v (chain %v)", err, chain)
				}
				// Drain what was persisted before the crash.
				for len(r.states) > 0 {
					rec := <-r.states
					total++
					chain = append(chain, rec.State)
				}
				crashed = true
				reboot = c.power
				break loop
			case <-h.rebootCh:
				reboot = true
				break loop
			case <-time.After(2 * time.Minute):
				t.Fatalf("hang after %v", chain)
			}
		}
		r.stop(t)
		h.checkBootable()
		if final != nil {
			return chain, *final
		}
		if reboot {
			h.boot()
		}
	}
	t.Fatalf("no final outcome after 12 runs: %v", chain)
	return nil, updated.Record{}
}

// dedup drops repeats of a state (a state re-entered after a crash).
func dedup(chain []updated.State) []updated.State {
	var out []updated.State
	for _, s := range chain {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

func crashScenario(t *testing.T, broken bool) {
	rel := newRelease(t, 0)
	payloadPath := rel.build(t, t.TempDir(), "2.0.0", 3, broken)
	setup := func(t *testing.T) (*host, *omahaServer) {
		h := newHost(t, "1.0.0")
		rel.install(t, h)
		srv := newOmahaServer(t)
		srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", payloadPath })
		h.writeConf(srv.URL())
		return h, srv
	}
	// want checks the outcome. A power loss while the new slot is verified or committed rolls
	// back: that boot used the slot's only try, exactly as a crash of the new image would.
	want := func(t *testing.T, h *host, rec updated.Record, wantRollback bool) {
		t.Helper()
		if got := rec.History[len(rec.History)-1].Outcome == updated.OutcomeRolledBack; got != wantRollback {
			t.Fatalf("rolled back = %v, want %v (history %+v)", got, wantRollback, rec.History)
		}
		slot, version := h.running()
		sl := h.slots()
		switch outcome := rec.History[len(rec.History)-1].Outcome; {
		case !broken && outcome == updated.OutcomeCommitted:
			if slot != "USR-B" || version != "2.0.0" || !sl["USR-B"].Attr.Successful() {
				t.Fatalf("committed, but running %s %s (%v)", slot, version, sl["USR-B"].Attr)
			}
			if b, _ := os.ReadFile(h.dir + "/state/floor.json"); !strings.Contains(string(b), `"floor":3`) {
				t.Fatalf("committed 2.0.0 (security version 3), but the floor file is %q", b)
			}
			if log := srv(h).log(); !contains(log, "check prev=1.0.0") {
				t.Fatalf("committed, but the update was never reported complete (previousversion=1.0.0): %v", log)
			}
		case outcome == updated.OutcomeRolledBack:
			if slot != "USR-A" || version != "1.0.0" || !sl["USR-A"].Attr.Successful() {
				t.Fatalf("rolled back, but running %s %s (%v)", slot, version, sl["USR-A"].Attr)
			}
			if log := srv(h).log(); !contains(log, "check rollback") {
				t.Fatalf("rollback never reported: %v", log)
			}
		default:
			t.Fatalf("outcome %q, boot %+v (broken=%v)", outcome, rec.Boot, broken)
		}
	}
	h, s := setup(t)
	servers[h] = s
	normal, rec := drive(t, h, s, crash{})
	want(t, h, rec, broken)
	t.Logf("normal chain (%d transitions): %v", len(normal), normal)

	for k := 1; k <= len(normal); k++ {
		for _, power := range []bool{false, true} {
			t.Run(fmt.Sprintf("crash after %d %s power=%v", k, normal[k-1], power), func(t *testing.T) {
				h, s := setup(t)
				servers[h] = s
				chain, rec := drive(t, h, s, crash{afterPersist: k, power: power})
				st := normal[k-1]
				want(t, h, rec, broken || power && (st == updated.Verifying || st == updated.Committing))
				if !power && !reflect.DeepEqual(dedup(chain), dedup(normal)) {
					t.Fatalf("chain %v\nwant (up to repeats) %v", chain, normal)
				}
			})
		}
	}
	// Crashes inside a state, while its event is in flight: "event 3/1" is sent after FINALIZING
	// flipped the GPT and before UPDATED_NEED_REBOOT is persisted, so a power loss there boots
	// the new slot from a record still in FINALIZING.
	for _, event := range []string{"event 13/1", "event 14/1", "event 3/1"} {
		for _, power := range []bool{false, true} {
			t.Run(fmt.Sprintf("crash during %s power=%v", event, power), func(t *testing.T) {
				h, s := setup(t)
				servers[h] = s
				chain, rec := drive(t, h, s, crash{request: event, power: power})
				want(t, h, rec, broken)
				if !power && !reflect.DeepEqual(dedup(chain), dedup(normal)) {
					t.Fatalf("chain %v\nwant (up to repeats) %v", chain, normal)
				}
			})
		}
	}
}

var servers = map[*host]*omahaServer{}

func srv(h *host) *omahaServer { return servers[h] }

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestCrashAtEveryTransition(t *testing.T) {
	t.Run("healthy", func(t *testing.T) { crashScenario(t, false) })
	t.Run("unhealthy", func(t *testing.T) { crashScenario(t, true) })
}

// A power loss while the old slot is committed after a failed health gate (COMMITTING, back on
// USR-A) boots USR-A again: the rollback is finished with the health gate's failure, not with a
// made-up "not marked good before the host rebooted", in the history.
func TestPowerLossCommittingRollbackKeepsFailure(t *testing.T) {
	rel := newRelease(t, 0)
	payloadPath := rel.build(t, t.TempDir(), "2.0.0", 3, true)
	setup := func(t *testing.T) (*host, *omahaServer) {
		h := newHost(t, "1.0.0")
		rel.install(t, h)
		srv := newOmahaServer(t)
		srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", payloadPath })
		h.writeConf(srv.URL())
		return h, srv
	}
	h, s := setup(t)
	normal, _ := drive(t, h, s, crash{})
	k := 0
	for i, st := range normal {
		if st == updated.Committing {
			k = i + 1
		}
	}
	if k == 0 {
		t.Fatalf("no COMMITTING in the chain %v", normal)
	}
	h, s = setup(t)
	_, rec := drive(t, h, s, crash{afterPersist: k, power: true})
	last := rec.History[len(rec.History)-1]
	if last.Outcome != updated.OutcomeRolledBack || last.ErrorCode != updated.CodeHealthGateFailed || !strings.Contains(last.Error, "app.service") {
		t.Fatalf("after a power loss while committing the old slot: outcome %s, error %d %q; want the health gate's failure (%d, app.service)",
			last.Outcome, last.ErrorCode, last.Error, updated.CodeHealthGateFailed)
	}
}

// A version that once failed to boot, offered again after `updatectl reset`, is installed into
// a slot that already holds it, so nothing is written and the slot keeps the bits of its failed
// try (priority 1, tries 0, not successful). A power loss in FINALIZING, before the slot is made
// the next boot, must continue the install, not take those stale bits for a new failed try:
// that would report a rollback of a version that never booted and refuse it again.
func TestPowerLossFinalizingReinstall(t *testing.T) {
	h, srv := scenario(t, 3, false)
	toNeedReboot(t, h, srv)
	h.boot() // 2.0.0 on trial: the try is used, and the boot dies before the agent runs
	h.boot() // back on USR-A 1.0.0
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "2.0.0 refused after its failed boot", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.LastError != nil && rec.LastError.Code == 35
	})
	if err := r.agent.ResetStatus(); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, "the reset", func(rec updated.Record) bool { return rec.State == updated.Idle && len(rec.BadVersions) == 0 })
	r.stop(t)

	// Install 2.0.0 again; the power fails once FINALIZING is persisted.
	r = h.start(srv.URL(), fast, 5)
	var last updated.Record
	for rec := range r.states {
		last = rec
		if rec.State == updated.Finalizing {
			break
		}
	}
	r.stop(t)
	if last.State != updated.Finalizing || last.Attempt.Image.BytesFetched != 0 {
		t.Fatalf("the run stopped in %s (image %+v); the test expects FINALIZING after an install that fetched nothing",
			last.State, last.Attempt.Image)
	}
	h.boot()
	if slot, _ := h.running(); slot != "USR-A" {
		t.Fatalf("booted %s, want USR-A", slot)
	}
	r = h.start(srv.URL(), fast, 0)
	rec := <-r.states
	r.stop(t)
	if rec.State != updated.Finalizing || rec.Rollback != nil || rec.IsBad("2.0.0") {
		t.Fatalf("after a power loss in FINALIZING: state %s, rollback %+v, bad versions %v; want FINALIZING continued",
			rec.State, rec.Rollback, rec.BadVersions)
	}
}

// dieAfterMarkGood commits a slot, then the machine dies before the agent records it.
type dieAfterMarkGood struct{ *partition.Disk }

func (d dieAfterMarkGood) MarkGood(s partition.Slot) error {
	if err := d.Disk.MarkGood(s); err != nil {
		return err
	}
	return errCrash
}

// A slot kept although it failed its health gate (the rollback was refused; 3/0 reported) and
// marked good just before a power loss boots again, now successful. That boot finishes the
// commit of an unhealthy slot: the attempt stays kept-unhealthy, and the update is never
// reported complete (previousversion) after its failure was reported.
func TestPowerLossCommittingKeptUnhealthy(t *testing.T) {
	h, srv := scenario(t, 3, true)
	toNeedReboot(t, h, srv)
	markOldSlotBad(t, h)
	h.boot()
	cfg := fast
	updated.WrapGPT(&cfg, func(d *partition.Disk) updated.GPTWriter { return dieAfterMarkGood{d} })
	r := h.start(srv.URL(), cfg, 0)
	err := <-r.done
	if !errors.Is(err, errCrash) {
		t.Fatalf("the agent ended with %v, want the crash after MarkGood", err)
	}
	r.done <- err
	if rec := r.agent.Record(); rec.State != updated.Committing || rec.Failure == nil {
		t.Fatalf("died in %s (failure %+v), want COMMITTING the kept slot", rec.State, rec.Failure)
	}
	h.boot()
	if slot, v := h.running(); slot != "USR-B" || v != "2.0.0" {
		t.Fatalf("booted %s %s after the power loss, want USR-B 2.0.0", slot, v)
	}
	r = h.start(srv.URL(), fast, 0)
	checked := false
	rec := waitState(t, r, "the commit finished and a check made", func(rec updated.Record) bool {
		checked = checked || rec.State == updated.CheckingForUpdate
		return checked && rec.State == updated.Idle
	})
	r.stop(t)
	if o := rec.History[len(rec.History)-1].Outcome; o != updated.OutcomeKept {
		t.Fatalf("outcome %q, want %q", o, updated.OutcomeKept)
	}
	if log := srv.log(); !contains(log, "event 3/0/1001") || contains(log, "check prev=1.0.0") {
		t.Fatalf("server saw %v: the health gate's failure and then the update reported complete", log)
	}
}

// dieInMarkBad is a disk on which the power fails in the first MarkBad: before the write
// (write false), or after it (write true). With backupOnly the write stops after the backup
// copy and the primary's entries: the primary is damaged and the disk reads the new table.
type dieInMarkBad struct {
	*partition.Disk
	write, backupOnly bool
}

func (d dieInMarkBad) MarkBad(s partition.Slot) error {
	switch {
	case d.backupOnly:
		if err := testimages.FailGPTWrite(d.Disk, true, func() error { return d.Disk.MarkBad(s) }); !errors.Is(err, partition.ErrWriteApplied) {
			return fmt.Errorf("the half-done write: %v", err)
		}
	case d.write:
		if err := d.Disk.MarkBad(s); err != nil {
			return err
		}
	}
	return errCrash
}

// `updatectl reset` in UPDATED_NEED_REBOOT cancels the installed update. A power loss at any
// point of RESETTING must leave the host on its old slot with the update cancelled: a boot of the
// new slot, on trial because its GPT change had not been made yet, is no update to verify and
// commit. The cancelled version is never committed, never raises the floor and is never
// reported complete, failed or rolled back.
func TestPowerLossResetting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stopAt int // the crash after the stopAt-th persist of the run that resets (2: RESETTING)
		die    *dieInMarkBad
	}{
		{name: "after RESETTING persisted", stopAt: 2},
		{name: "in MarkBad, before the write", die: &dieInMarkBad{}},
		{name: "in MarkBad, backup written", die: &dieInMarkBad{backupOnly: true}},
		{name: "in MarkBad, after the write", die: &dieInMarkBad{write: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := scenario(t, 3, false)
			toNeedReboot(t, h, srv)
			cfg := fast
			if tc.die != nil {
				updated.WrapGPT(&cfg, func(d *partition.Disk) updated.GPTWriter { die := *tc.die; die.Disk = d; return die })
			}
			r := h.start(srv.URL(), cfg, tc.stopAt)
			waitState(t, r, "UPDATED_NEED_REBOOT", inState(updated.UpdatedNeedReboot))
			if err := r.agent.ResetStatus(); err != nil {
				t.Fatal(err)
			}
			if err := <-r.done; !errors.Is(err, errCrash) {
				t.Fatalf("the agent ended with %v, want the power loss in RESETTING", err)
			} else {
				r.done <- err
			}
			if rec := r.agent.Record(); rec.State != updated.Resetting {
				t.Fatalf("the power failed in %s, want RESETTING", rec.State)
			}

			// The power comes back: run the host until a check after the reset is done, rebooting
			// it whenever the agent asks. The server no longer offers 2.0.0, so that the check
			// ends in IDLE and not in a new install.
			srv.set(func(s *omahaServer) { s.offer = "" })
			var rec updated.Record
			for boots := 0; ; boots++ {
				if boots == 4 {
					t.Fatalf("no check after the reset within %d boots", boots)
				}
				h.boot()
				r := h.start(srv.URL(), fast, 0)
				checked, done := false, false
				for !done {
					select {
					case rec = <-r.states:
						checked = checked || rec.State == updated.CheckingForUpdate
						done = checked && rec.State == updated.Idle
					case <-h.rebootCh:
						done = true
					case err := <-r.done:
						r.done <- err
						t.Fatalf("agent stopped: %v", err)
					case <-time.After(2 * time.Minute):
						t.Fatal("hang")
					}
				}
				r.stop(t)
				if checked {
					break
				}
			}
			slot, version := h.running()
			sl := h.slots()
			if slot != "USR-A" || version != "1.0.0" || sl["USR-B"].Attr.Successful() || sl["USR-B"].Attr.Priority() != 0 {
				t.Fatalf("after the cancelled update: running %s %s, USR-B %v; want USR-A 1.0.0 and USR-B unbootable", slot, version, sl["USR-B"].Attr)
			}
			if len(rec.History) == 0 || rec.History[len(rec.History)-1].Outcome != updated.OutcomeCancelled {
				t.Fatalf("history %+v, want the attempt cancelled", rec.History)
			}
			if rec.Rollback != nil || rec.IsBad("2.0.0") || rec.LastError != nil {
				t.Fatalf("rollback %+v, bad versions %v, last error %+v: the cancel was taken for a failure", rec.Rollback, rec.BadVersions, rec.LastError)
			}
			if b, _ := os.ReadFile(h.dir + "/state/floor.json"); strings.Contains(string(b), `"floor":3`) {
				t.Fatalf("the cancelled 2.0.0 raised the floor: %s", b)
			}
			for _, e := range srv.log() {
				if e == "check prev=1.0.0" || e == "check rollback" || strings.HasPrefix(e, "event 3/0") {
					t.Fatalf("server saw %q for a cancelled update: %v", e, srv.log())
				}
			}
		})
	}
}
