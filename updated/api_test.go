package updated_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbustest"
	"github.com/twinslot/twinslot/updated/floor"
)

// TestDBus drives an update over the D-Bus API on a private bus: AttemptUpdate starts it, the
// StatusUpdate signals walk update_engine's states, GetStatus and GetBootStatus answer, and
// ResetStatus is refused while busy.
func TestDBus(t *testing.T) {
	bus := dbustest.New(t)
	h, srv := scenario(t, 3, false)

	cfg := updated.Config{Bus: bus.Conn(t)} // default schedule: the first check is minutes away
	r := h.start(srv.URL(), cfg, 0)
	waitState(t, r, "start", inState(updated.Idle))
	c := dbusapi.NewClient(bus.Conn(t))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var st dbusapi.Status
	var err error
	for st.CurrentOperation == "" { // the name may take a moment to appear
		if st, err = c.GetStatus(ctx); err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	if st.CurrentOperation != dbusapi.OpIdle || st.LastCheckedTime != 0 || st.NewVersion != dbusapi.NoVersion {
		t.Fatalf("status before any check %+v", st)
	}
	bs, err := c.GetBootStatus(ctx)
	if err != nil || bs != (dbusapi.BootStatus{State: "steady", BootedVersion: "1.0.0", Slot: "USR-A"}) {
		t.Fatalf("boot status %+v, %v", bs, err)
	}
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := c.AttemptUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for len(ops) == 0 || ops[len(ops)-1] != dbusapi.OpUpdatedNeedReboot {
		s, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", ops, err)
		}
		if s.Status == nil {
			continue
		}
		if len(ops) == 0 || ops[len(ops)-1] != s.Status.CurrentOperation {
			ops = append(ops, s.Status.CurrentOperation)
		}
		if s.Status.CurrentOperation == dbusapi.OpDownloading && (s.Status.NewVersion != "2.0.0" || s.Status.NewSize <= 0) {
			t.Fatalf("downloading status %+v", s.Status)
		}
	}
	want := []string{dbusapi.OpCheckingForUpdate, dbusapi.OpUpdateAvailable, dbusapi.OpDownloading, dbusapi.OpFinalizing, dbusapi.OpUpdatedNeedReboot}
	if !reflect.DeepEqual(ops, want) {
		t.Fatalf("StatusUpdate operations %v, want %v", ops, want)
	}
	st, err = c.GetStatus(ctx)
	if err != nil || st.Progress != 1 || st.NewVersion != "2.0.0" || st.LastCheckedTime == 0 {
		t.Fatalf("status after install %+v, %v", st, err)
	}
	r.stop(t)

	// After the reboot: verifying, then committed, as BootStatus signals; while the health gate
	// runs StatusUpdate says VERIFYING with the version on trial, then IDLE with "0.0.0".
	h.boot()
	r = h.start(srv.URL(), updated.Config{Bus: bus.Conn(t), Schedule: fast.Schedule}, 0)
	var states []string
	var statuses []dbusapi.Status
	for len(states) == 0 || states[len(states)-1] != "committed" {
		s, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", states, err)
		}
		if s.Status != nil {
			statuses = append(statuses, *s.Status)
		}
		if s.Boot != nil {
			states = append(states, s.Boot.State)
			if s.Boot.BootedVersion != "2.0.0" || s.Boot.PreviousVersion != "1.0.0" || s.Boot.Slot != "USR-B" {
				t.Fatalf("boot status %+v", s.Boot)
			}
		}
	}
	if states[0] != "verifying" {
		t.Fatalf("BootStatus signals %v, want verifying then committed", states)
	}
	if len(statuses) == 0 || statuses[0].CurrentOperation != dbusapi.OpVerifying || statuses[0].NewVersion != "2.0.0" {
		t.Fatalf("StatusUpdate signals after the reboot %+v, want VERIFYING 2.0.0 first", statuses)
	}
	for st.CurrentOperation != dbusapi.OpIdle { // the commit is followed by a check at once
		if st, err = c.GetStatus(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st.NewVersion != dbusapi.NoVersion {
		t.Fatalf("status after the commit %+v", st)
	}
	r.stop(t)
}

// TestTPMFloor commits an update on a host with a TPM (the go-tpm-tools simulator): the NV
// counter reaches the image's security version only at the commit, and the PCR holds the
// image digest; a TPM reboot keeps the floor.
func TestTPMFloor(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		if strings.Contains(err.Error(), "CGO") {
			t.Skipf("TPM simulator needs cgo: %v", err)
		}
		t.Fatal(err)
	}
	defer sim.Close()
	tpm := transport.FromReadWriter(sim)
	h := newHost(t, "1.0.0")
	h.tpm = tpm
	rel := newRelease(t, 0)
	rel.install(t, h)
	srv := newOmahaServer(t)
	srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", rel.build(t, t.TempDir(), "2.0.0", 5, false) })
	h.writeConf(srv.URL())
	ctx := t.Context()
	rec := toNeedReboot(t, h, srv)
	if v, err := (&floor.TPM{T: tpm}).Get(ctx); err != nil || v != 0 {
		t.Fatalf("TPM floor before the commit = %d, %v; want 0", v, err)
	}
	if err := sim.Reset(); err != nil { // the reboot
		t.Fatal(err)
	}
	h.boot()
	r := h.start(srv.URL(), fast, 0)
	waitState(t, r, "committed", func(rec updated.Record) bool { return rec.Boot.State == updated.BootCommitted })
	r.stop(t)
	if v, err := (&floor.TPM{T: tpm}).Get(ctx); err != nil || v != 5 {
		t.Fatalf("TPM floor after the commit = %d, %v; want 5", v, err)
	}
	digest, _ := hex.DecodeString(rec.Attempt.Image.SHA256)
	want := sha256.Sum256(append(make([]byte, 32), digest...))
	got, err := floor.ReadPCR(tpm, floor.DefaultPCR)
	if err != nil || !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR %d = %x, %v; want the extend of %x", floor.DefaultPCR, got, err, digest)
	}
	// A restart in the same boot does not extend again.
	r = h.start(srv.URL(), fast, 0)
	waitState(t, r, "start", inState(updated.Idle))
	r.stop(t)
	if got, _ := floor.ReadPCR(tpm, floor.DefaultPCR); !bytes.Equal(got, want[:]) {
		t.Fatal("the PCR was extended twice in one boot")
	}
	// A payload below the TPM floor is refused even if the floor file is deleted.
	sim.Reset()
	h.boot()
	srv.set(func(s *omahaServer) { s.offer, s.payload = "3.0.0", rel.build(t, t.TempDir(), "3.0.0", 4, false) })
	rec = failOnce(t, h, srv)
	if rec.LastError.Code != updated.CodeBelowSecurityFloor {
		t.Fatalf("a payload below the TPM floor: %+v", rec.LastError)
	}
}

// TestCheckSchedule checks update_engine's schedule on the fake clock: the first check 7 min after
// start (the jitter source gives the middle of 7±5), then 45 min; ping-only every 45 min while
// an installed update waits for the reboot.
func TestCheckSchedule(t *testing.T) {
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	srv := newOmahaServer(t)
	h.writeConf(srv.URL())
	r := h.start(srv.URL(), updated.Config{}, 0)
	next := func(want time.Duration) {
		t.Helper()
		ws, err := h.clk.WaitFor(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if ws[0] != want {
			t.Fatalf("next wait %v, want %v", ws, want)
		}
		h.clk.AdvanceToNext()
	}
	waitState(t, r, "start", inState(updated.Idle))
	next(7 * time.Minute)
	waitState(t, r, "the first check", inState(updated.Idle))
	next(45 * time.Minute)
	waitState(t, r, "the second check", inState(updated.Idle))
	srv.set(func(s *omahaServer) { s.offer, s.payload = "2.0.0", rel.build(t, t.TempDir(), "2.0.0", 3, false) })
	next(45 * time.Minute)
	waitState(t, r, "NEED_REBOOT", inState(updated.UpdatedNeedReboot))
	next(45 * time.Minute)
	next(45 * time.Minute)
	deadline := time.After(time.Minute)
	for n := 0; n < 2; {
		select {
		case <-deadline:
			t.Fatalf("pings: %v", srv.log())
		case <-time.After(10 * time.Millisecond):
		}
		n = strings.Count(strings.Join(srv.log(), ","), "ping")
	}
	r.stop(t)
	want := []string{"check prev=0.0.0.0", "check prev=", "check prev=", "event 13/1", "event 14/1", "event 3/1", "ping", "ping"}
	if got := srv.log(); !reflect.DeepEqual(got, want) {
		t.Fatalf("server saw %v, want %v", got, want)
	}
}

// TestDownloadResumes cancels the agent in the middle of a download (a crash) and checks that
// the restarted agent finishes it reusing what the first attempt wrote.
func TestDownloadResumes(t *testing.T) {
	h, srv := scenario(t, 3, false)
	var r *run
	cut := make(chan struct{})
	cfg := fast
	cfg.OnStatus = func(s dbusapi.Status) {
		if s.CurrentOperation == dbusapi.OpDownloading && s.Progress > 0.3 {
			select {
			case <-cut:
			default:
				close(cut)
			}
		}
	}
	cfg.Install.Parallel = 1
	cfg.Install.MaxRequest = 64 << 10
	cfg.Install.ProgressInterval = time.Nanosecond
	r = h.start(srv.URL(), cfg, 0)
	select {
	case <-cut:
	case <-time.After(2 * time.Minute):
		t.Fatal("no download progress")
	}
	r.stop(t)
	if rec := r.agent.Record(); rec.State != updated.Downloading {
		t.Fatalf("cut in %s, want DOWNLOADING", rec.State)
	}
	r = h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "NEED_REBOOT", inState(updated.UpdatedNeedReboot))
	r.stop(t)
	if img := rec.Attempt.Image; img.BytesReused == 0 {
		t.Fatalf("the resumed install reused nothing: %+v", img)
	}
}

// TestNotify checks the sd_notify messages: READY=1 once the agent serves, STATUS= with each
// state, WATCHDOG=1 every half watchdog interval, STOPPING=1 at the end.
func TestNotify(t *testing.T) {
	h, srv := scenario(t, 3, false)
	var mu sync.Mutex
	var msgs []string
	notify := func(s string) error {
		mu.Lock()
		defer mu.Unlock()
		msgs = append(msgs, s)
		return nil
	}
	a, err := updated.New(func() updated.Host { ah := h.agentHost(srv.URL()); ah.Notify = notify; return ah }(),
		updated.Config{Watchdog: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Idle waits for the first check (7 min) and the watchdog for 30 s: fire the watchdog twice.
	for i := 0; i < 2; i++ {
		for {
			ws, err := h.clk.WaitFor(ctx, 2)
			if err != nil {
				t.Fatal(err)
			}
			if ws[0] == 30*time.Second {
				break
			}
		}
		h.clk.Advance(30 * time.Second)
	}
	deadline := time.After(time.Minute)
	for {
		mu.Lock()
		n := strings.Count(strings.Join(msgs, "\n"), "WATCHDOG=1")
		mu.Unlock()
		if n == 2 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("messages %q", msgs)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if msgs[0] != "STATUS=UPDATE_STATUS_IDLE" || !contains(msgs, "READY=1\nSTATUS=UPDATE_STATUS_IDLE") || msgs[len(msgs)-1] != "STOPPING=1" {
		t.Fatalf("messages %q", msgs)
	}
}
