package updated_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

// failOnce runs one update attempt and returns the record after the failure was reported.
func failOnce(t *testing.T, h *host, srv *omahaServer) updated.Record {
	t.Helper()
	r := h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "a reported failure", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.LastError != nil
	})
	r.stop(t)
	return rec
}

func TestServerFailures(t *testing.T) {
	for _, tc := range []struct {
		name     string
		set      func(s *omahaServer)
		wantCode int
		wantMsg  string // in the reported failure's message
	}{
		{"503", func(s *omahaServer) { s.status = 503 }, int(omaha.ErrorCodeOmahaRequestHTTPResponseBase) + 503, "503"},
		{"garbage", func(s *omahaServer) { s.garbage = true }, int(omaha.ErrorCodeOmahaRequestXMLParseError), ""},
		{"down", nil, int(omaha.ErrorCodeOmahaRequestError), ""},
		// Nebraska's answer for a track it does not know: said as what it is, with the file that
		// set GROUP.
		{"unknown group", func(s *omahaServer) { s.appStatus = omaha.StatusUnknownApplicationOrGroup }, int(omaha.ErrorCodeOmahaResponseInvalid),
			`the server knows no group "stable"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, "1.0.0")
			newRelease(t, 0).install(t, h)
			srv := newOmahaServer(t)
			url := srv.URL()
			if tc.set != nil {
				srv.set(tc.set)
			} else {
				srv.srv.Close() // nothing listens any more
			}
			h.writeConf(url)
			before := fileHash(t, h.disk)
			r := h.start(url, fast, 0)
			rec := waitState(t, r, "a reported failure", func(rec updated.Record) bool {
				return rec.State == updated.Idle && rec.LastError != nil
			})
			// Backoff: one failure doubles the 45 min period, jittered ±half (Rand gives the middle).
			pending, err := h.clk.WaitFor(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			r.stop(t)
			if rec.LastError.Code != tc.wantCode || rec.Failures != 1 || rec.LastError.Step != updated.CheckingForUpdate ||
				!strings.Contains(rec.LastError.Message, tc.wantMsg) {
				t.Fatalf("last error %+v failures %d; want code %d with %q", rec.LastError, rec.Failures, tc.wantCode, tc.wantMsg)
			}
			if tc.name == "unknown group" && !strings.Contains(rec.LastError.Message, "(GROUP=stable in "+filepath.Join(h.dir, "etc/update.conf")+")") {
				t.Fatalf("the unknown group does not name the file that set GROUP: %s", rec.LastError.Message)
			}
			if pending[len(pending)-1] != 90*time.Minute {
				t.Fatalf("next check in %v, want 90m (backoff)", pending)
			}
			if fileHash(t, h.disk) != before {
				t.Fatal("the disk changed after a failed check")
			}
		})
	}
}

// A rollback waiting to be reported is checked at once, but a failing server still gets the
// backoff: no tight loop of checks.
func TestPendingReportBacksOff(t *testing.T) {
	h := newHost(t, "1.0.0")
	newRelease(t, 0).install(t, h)
	srv := newOmahaServer(t)
	srv.set(func(s *omahaServer) { s.status = 503 })
	h.writeConf(srv.URL())
	rec := updated.NewRecord()
	rec.BootID = "an-earlier-boot"
	rec.Rollback = &updated.RollbackReport{FailedVersion: "2.0.0", FellBackTo: "1.0.0"}
	if err := (updated.Store{Dir: h.dir + "/state"}).Save(rec); err != nil {
		t.Fatal(err)
	}
	r := h.start(srv.URL(), updated.Config{}, 0) // default schedule: the first check would be 7 min away
	rec = waitState(t, r, "a failed check", func(rec updated.Record) bool { return rec.State == updated.Idle && rec.Failures == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ws, err := h.clk.WaitFor(ctx, 1)
	if err != nil {
		t.Fatalf("the agent does not wait after the failed check (a tight loop?): %v; server saw %d requests", err, len(srv.log()))
	}
	r.stop(t)
	if rec.Rollback == nil || ws[len(ws)-1] != 90*time.Minute {
		t.Fatalf("after a failed report: rollback %+v, waiting %v (want 90m)", rec.Rollback, ws)
	}
	if n := len(srv.log()); n != 0 {
		t.Fatalf("the 503 server recorded %d requests", n)
	}
}

// ResetStatus in IDLE forgets the backoff with the failures: the next check comes on the normal
// schedule (45 min), not when the backoff (90 min after one failure) would have allowed it.
func TestResetForgetsBackoff(t *testing.T) {
	h := newHost(t, "1.0.0")
	newRelease(t, 0).install(t, h)
	srv := newOmahaServer(t)
	srv.set(func(s *omahaServer) { s.status = 503 })
	h.writeConf(srv.URL())
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "a failed check", func(rec updated.Record) bool { return rec.State == updated.Idle && rec.Failures == 1 })
	if ws, err := h.clk.WaitFor(t.Context(), 1); err != nil || ws[0] != 90*time.Minute {
		t.Fatalf("waiting %v, %v; want the 90m backoff", ws, err)
	}
	h.clk.Advance(10 * time.Minute)
	srv.set(func(s *omahaServer) { s.status = 0 })
	if err := r.agent.ResetStatus(); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, "the reset", func(rec updated.Record) bool { return rec.State == updated.Idle && rec.Failures == 0 })
	ws, err := h.clk.WaitFor(t.Context(), 2) // the abandoned backoff wait and the one after the reset
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(45 * time.Minute)
	select {
	case rec := <-r.states:
		if rec.State != updated.CheckingForUpdate {
			t.Fatalf("%s 45 min after the reset, want CHECKING_FOR_UPDATE", rec.State)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no check 45 min after ResetStatus (waiting %v): the backoff was not forgotten", ws)
	}
	r.stop(t)
}

func TestPayloadRejected(t *testing.T) {
	rel := newRelease(t, 0)
	dir := t.TempDir()
	good := rel.build(t, dir, "2.0.0", 3, false)
	for _, tc := range []struct {
		name        string
		payload     func(t *testing.T) string
		trust       func(t *testing.T, h *host)
		wantCode    int
		diskUnmoved bool // nothing at all may be written
	}{
		{"bad signature", func(t *testing.T) string {
			return tamper(t, good, func(b []byte) { i := strings.Index(string(b), `"sig":"`) + 10; b[i] ^= 1 })
		}, nil, updated.CodePayloadVerificationError, true},
		{"unknown key", func(t *testing.T) string { return newRelease(t, 0).build(t, t.TempDir(), "2.0.0", 3, false) },
			nil, updated.CodePubKeyVerificationError, true},
		{"below the floor", func(t *testing.T) string { return good }, func(t *testing.T, h *host) {
			os.WriteFile(h.dir+"/state/floor.json", []byte(`{"version":1,"floor":4}`), 0o644)
		}, updated.CodeBelowSecurityFloor, true},
		{"no trust root", func(t *testing.T) string { return good }, func(t *testing.T, h *host) {
			os.Remove(h.dir + "/etc/trust.json")
		}, updated.CodePubKeyVerificationError, true},
		{"truncated", func(t *testing.T) string {
			b, _ := os.ReadFile(good)
			p := t.TempDir() + "/cut.tsp"
			os.WriteFile(p, b[:len(b)/2], 0o644)
			return p
		}, nil, updated.CodePayloadSizeMismatch, true},
		{"chunk data tampered", func(t *testing.T) string {
			return tamper(t, good, func(b []byte) { b[len(b)*2/3] ^= 0xff })
		}, nil, updated.CodeOperationHashMismatch, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, "1.0.0")
			rel.install(t, h)
			if tc.trust != nil {
				tc.trust(t, h)
			}
			srv := newOmahaServer(t)
			p := tc.payload(t)
			srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", p })
			h.writeConf(srv.URL())
			before := fileHash(t, h.disk)
			slotsBefore := h.slots()
			rec := failOnce(t, h, srv)
			if rec.LastError.Code != tc.wantCode || rec.LastError.Step != updated.Downloading {
				t.Fatalf("last error %+v, want code %d in DOWNLOADING", rec.LastError, tc.wantCode)
			}
			if tc.diskUnmoved && fileHash(t, h.disk) != before {
				t.Fatal("the disk (slot or GPT) changed although the payload was refused before any write")
			}
			after := h.slots()
			if after["USR-A"] != slotsBefore["USR-A"] {
				t.Fatalf("the running slot changed: %v -> %v", slotsBefore["USR-A"].Attr, after["USR-A"].Attr)
			}
			if b := after["USR-B"].Attr; b.Priority() != 0 {
				t.Fatalf("USR-B is bootable after a failed install: %v", b)
			}
			log := srv.log()
			if got := log[len(log)-1]; !strings.HasPrefix(got, "event 3/0/") {
				t.Fatalf("server saw %v, want a 3/0 error event last", log)
			}
			if len(rec.History) != 1 || rec.History[0].Outcome != updated.OutcomeFailed {
				t.Fatalf("history %+v", rec.History)
			}
		})
	}
}

func tamper(t *testing.T, path string, f func([]byte)) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f(b)
	p := t.TempDir() + "/tampered.tsp"
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNoBoard(t *testing.T) {
	h, srv := scenario(t, 3, false)
	h.mu.Lock()
	h.rel.Board = ""
	h.mu.Unlock()
	before := fileHash(t, h.disk)
	rec := failOnce(t, h, srv)
	if rec.LastError.Code != updated.CodeWrongPayload || !strings.Contains(rec.LastError.Message, "BOARD") || fileHash(t, h.disk) != before {
		t.Fatalf("last error %+v", rec.LastError)
	}
}

func TestWrongBoard(t *testing.T) {
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	h.mu.Lock()
	h.rel.Board = "arm64-usr"
	h.mu.Unlock()
	srv := newOmahaServer(t)
	srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", rel.build(t, t.TempDir(), "2.0.0", 3, false) })
	h.writeConf(srv.URL())
	before := fileHash(t, h.disk)
	rec := failOnce(t, h, srv)
	if rec.LastError.Code != updated.CodeWrongPayload || fileHash(t, h.disk) != before {
		t.Fatalf("last error %+v (disk changed: %v)", rec.LastError, fileHash(t, h.disk) != before)
	}
}

func TestResetCancelsInstalledUpdate(t *testing.T) {
	h, srv := scenario(t, 3, false)
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "NEED_REBOOT", inState(updated.UpdatedNeedReboot))
	if err := r.agent.ResetStatus(); err != nil {
		t.Fatal(err)
	}
	var chain []updated.State
	rec := waitState(t, r, "reset done", func(rec updated.Record) bool {
		chain = append(chain, rec.State)
		return rec.State == updated.Idle
	})
	r.stop(t)
	if !reflect.DeepEqual(chain, []updated.State{updated.Resetting, updated.Idle}) {
		t.Fatalf("chain %v", chain)
	}
	if rec.PrevVersionPref != "" || rec.History[0].Outcome != updated.OutcomeCancelled {
		t.Fatalf("pref %q history %+v", rec.PrevVersionPref, rec.History)
	}
	h.boot()
	if slot, _ := h.running(); slot != "USR-A" {
		t.Fatalf("booted %s after the update was cancelled", slot)
	}
}

// A health.d check that keeps failing holds the agent in VERIFYING until the deadline; meanwhile
// ResetStatus is refused and AttemptUpdate does nothing. At the deadline the slot rolls back and
// the failure names the check.
func TestHealthDeadline(t *testing.T) {
	h, srv := scenario(t, 3, false)
	h.writeConf(srv.URL(), "HEALTH_TIMEOUT=2m")
	toNeedReboot(t, h, srv)
	if err := os.WriteFile(h.dir+"/etc/health.d/50-app", []byte("#!/bin/sh\necho app not answering >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.boot()
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "VERIFYING", inState(updated.Verifying))
	if _, err := h.clk.WaitFor(t.Context(), 1); err != nil { // the gate waits to retry
		t.Fatal(err)
	}
	if err := r.agent.ResetStatus(); !errors.Is(err, dbusapi.ErrNotAllowed) {
		t.Fatalf("ResetStatus while verifying = %v, want ErrNotAllowed", err)
	}
	r.agent.AttemptUpdate()
	if st := r.agent.Status(); st.CurrentOperation != "UPDATE_STATUS_VERIFYING" {
		t.Fatalf("status %+v", st)
	}
	if bs := r.agent.BootStatus(); bs.State != "verifying" || bs.PreviousVersion != "1.0.0" {
		t.Fatalf("boot status %+v", bs)
	}
	for i := 0; i < 200; i++ {
		h.clk.Advance(time.Second)
		select {
		case <-h.rebootCh:
			rec := r.agent.Record()
			r.stop(t)
			if rec.State != updated.RollingBack || !strings.Contains(rec.Failure.Message, "health.d/50-app") ||
				!strings.Contains(rec.Failure.Message, "app not answering") {
				t.Fatalf("%s: %+v", rec.State, rec.Failure)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("no rollback after the health deadline")
}

// TestStaleAttemptUpdate: AttemptUpdate while the agent downloads does nothing, then or later:
// once the attempt failed and the agent is idle again, it waits for its backoff instead of
// checking at once on the old request (issue 18, hole 9).
func TestStaleAttemptUpdate(t *testing.T) {
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	h.mu.Lock()
	h.rel.Board = "arm64-usr" // the payload is refused once its envelope is fetched
	h.mu.Unlock()
	srv := newOmahaServer(t)
	started := make(chan *updated.Agent, 1)
	var asked atomic.Int32
	srv.set(func(s *omahaServer) {
		s.offer, s.payload = "2.0.0", rel.build(t, t.TempDir(), "2.0.0", 3, false)
		s.onDownload = func() {
			a := <-started
			started <- a
			if st := a.Status(); st.CurrentOperation == dbusapi.OpDownloading {
				asked.Add(1)
				a.AttemptUpdate()
			}
		}
	})
	h.writeConf(srv.URL())
	r := h.start(srv.URL(), fast, 0)
	started <- r.agent
	waitState(t, r, "the refused payload reported", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.LastError != nil
	})
	if asked.Load() == 0 {
		t.Fatal("AttemptUpdate was not called while downloading")
	}
	// The clock stands still: a new state can only come from the stale request.
	select {
	case rec := <-r.states:
		t.Fatalf("the agent left IDLE for %s on an AttemptUpdate made while it was downloading", rec.State)
	case <-time.After(time.Second):
	}
	r.stop(t)
}

// gateClock moves the fake clock one pending wait at a time (the gate's retries) until the
// agent asks for a reboot or the clock reaches until. It returns the clock's time then and
// whether the agent asked for a reboot.
func gateClock(t *testing.T, h *host, until time.Time) (time.Time, bool) {
	t.Helper()
	hang := time.After(2 * time.Minute)
	for {
		select {
		case <-h.rebootCh:
			return h.clk.Now(), true
		case <-hang:
			t.Fatalf("no reboot and no pending wait at %v (a hang)", h.clk.Now())
		default:
		}
		if !h.clk.Now().Before(until) {
			return h.clk.Now(), false
		}
		// Waits of earlier runs stay pending on the fake clock (45 min to the next check, say):
		// move only to a retry of the gate. None: the agent is busy (running the check, rolling
		// back); wait for its next wait.
		ws := h.clk.Pending()
		if slices.ContainsFunc(ws, func(d time.Duration) bool { return d <= time.Second }) {
			h.clk.AdvanceToNext()
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		h.clk.WaitFor(ctx, len(ws)+1)
		cancel()
	}
}

// healthTrial installs 2.0.0 with a health.d check that never passes and HEALTH_TIMEOUT=2m,
// boots it (on trial) and starts the agent; it returns once the gate waits to retry, with the
// time the agent started.
func healthTrial(t *testing.T) (*host, *omahaServer, *run, time.Time) {
	t.Helper()
	h, srv := scenario(t, 3, false)
	h.writeConf(srv.URL(), "HEALTH_TIMEOUT=2m")
	toNeedReboot(t, h, srv)
	if err := os.WriteFile(h.dir+"/etc/health.d/50-app", []byte("#!/bin/sh\necho app not answering >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.boot()
	start := h.clk.Now()
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "VERIFYING", inState(updated.Verifying))
	if _, err := h.clk.WaitFor(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	return h, srv, r, start
}

// wantGateRollback checks that the agent rolled back because the gate's deadline passed.
func wantGateRollback(t *testing.T, r *run) {
	t.Helper()
	rec := r.agent.Record()
	if rec.State != updated.RollingBack || rec.Failure == nil || rec.Failure.Code != updated.CodeHealthGateFailed ||
		!strings.Contains(rec.Failure.Message, "deadline of 2m0s passed") {
		t.Fatalf("%s: %+v; want ROLLING_BACK on the gate's deadline", rec.State, rec.Failure)
	}
}

// A restart of the agent within the boot does not restart the health gate's deadline: an agent
// that crash-loops (or is restarted by systemd) while its slot is on trial cannot keep the
// trial going. The gate counts from when it first started in this boot and rolls back then.
func TestHealthDeadlineSurvivesRestart(t *testing.T) {
	h, srv, r, start := healthTrial(t)
	deadline := start.Add(2 * time.Minute)
	if _, rebooted := gateClock(t, h, start.Add(90*time.Second)); rebooted {
		t.Fatal("rolled back after 90s of a 2m gate")
	}
	r.stop(t)
	r = h.start(srv.URL(), fast, 0) // the same boot
	at, rebooted := gateClock(t, h, deadline.Add(30*time.Second))
	if !rebooted {
		t.Fatalf("no rollback %v after the gate first started (HEALTH_TIMEOUT=2m): the restart gave the gate a fresh deadline", at.Sub(start))
	}
	if at.Before(deadline) || at.After(deadline.Add(time.Second)) {
		t.Fatalf("rolled back %v after the gate first started, want at its deadline (2m)", at.Sub(start))
	}
	wantGateRollback(t, r)
	r.stop(t)
}

// A new boot on a slot still on trial gets a fresh deadline: the time a gate ran in an earlier
// boot does not count against this one.
func TestHealthDeadlineFreshPerBoot(t *testing.T) {
	h, srv, r, start := healthTrial(t)
	if _, rebooted := gateClock(t, h, start.Add(90*time.Second)); rebooted {
		t.Fatal("rolled back after 90s of a 2m gate")
	}
	r.stop(t)
	h.mu.Lock()
	h.bootID = uuid() // booted again into the same slot, still on trial (say, a kexec)
	h.mu.Unlock()
	restart := h.clk.Now()
	r = h.start(srv.URL(), fast, 0)
	waitState(t, r, "VERIFYING", inState(updated.Verifying))
	at, rebooted := gateClock(t, h, restart.Add(2*time.Minute+30*time.Second))
	if !rebooted {
		t.Fatalf("no rollback %v into the new boot (HEALTH_TIMEOUT=2m)", at.Sub(restart))
	}
	if d := at.Sub(restart); d < 2*time.Minute || d > 2*time.Minute+time.Second {
		t.Fatalf("rolled back %v into the new boot, want a fresh deadline of 2m", d)
	}
	wantGateRollback(t, r)
	r.stop(t)
}

// An agent that comes back after the gate's deadline passed (it was down, or crash-looping,
// meanwhile) fails the gate at once, without running the checks, and rolls back.
func TestHealthDeadlinePassedWhileDown(t *testing.T) {
	h, srv, r, start := healthTrial(t)
	if _, rebooted := gateClock(t, h, start.Add(90*time.Second)); rebooted {
		t.Fatal("rolled back after 90s of a 2m gate")
	}
	r.stop(t)
	h.clk.Advance(time.Minute) // the agent is down past the deadline
	r = h.start(srv.URL(), fast, 0)
	select {
	case <-h.rebootCh:
	case <-time.After(30 * time.Second): // the fake clock stands still: only a prompt failure gets here
		t.Fatal("no prompt rollback of a gate restarted after its deadline")
	}
	wantGateRollback(t, r)
	if msg := r.agent.Record().Failure.Message; !strings.Contains(msg, "before a restart") || !strings.Contains(msg, "health.d/50-app: not run") {
		t.Fatalf("failure %q; want the deadline passed before the restart, the check not run", msg)
	}
	r.stop(t)
}
