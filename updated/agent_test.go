package updated_test

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/updated"
)

// fast checks at once after start; later checks follow the default period.
var fast = updated.Config{Schedule: func() updated.Schedule {
	s := updated.DefaultSchedule()
	s.First, s.FirstFuzz = 0, 0
	return s
}()}

// toNeedReboot runs the host's agent until an update is installed and waits for a reboot.
func toNeedReboot(t *testing.T, h *host, srv *omahaServer) updated.Record {
	t.Helper()
	r := h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "UPDATED_NEED_REBOOT", inState(updated.UpdatedNeedReboot))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestUpdateCommit(t *testing.T) {
	h, srv := scenario(t, 3, false)

	rec := toNeedReboot(t, h, srv)
	if rec.Attempt == nil || rec.Attempt.TargetSlot != "USR-B" || rec.Attempt.Image.SecurityVersion != 3 {
		t.Fatalf("attempt %+v", rec.Attempt)
	}
	sl := h.slots()
	if b := sl["USR-B"].Attr; b.Priority() != 2 || b.Tries() != 1 || b.Successful() {
		t.Fatalf("USR-B after install: %v, want P=2 T=1 S=0", b)
	}
	if a := sl["USR-A"].Attr; a.Priority() != 1 || !a.Successful() {
		t.Fatalf("USR-A after install: %v", a)
	}
	if got, want := srv.log(), []string{"check prev=0.0.0.0", "event 13/1", "event 14/1", "event 3/1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("server saw %v, want %v", got, want)
	}

	h.boot()
	if slot, v := h.running(); slot != "USR-B" || v != "2.0.0" {
		t.Fatalf("booted %s %s, want USR-B 2.0.0", slot, v)
	}
	r := h.start(srv.URL(), fast, 0)
	var chain []updated.State
	rec = waitState(t, r, "the commit reported", func(rec updated.Record) bool {
		chain = append(chain, rec.State)
		return rec.State == updated.Idle && rec.PrevVersionPref == "" && rec.Seq > 0 && len(chain) > 3
	})
	r.stop(t)
	if want := []updated.State{updated.Verifying, updated.Committing, updated.Idle, updated.CheckingForUpdate, updated.Idle}; !reflect.DeepEqual(chain, want) {
		t.Fatalf("state chain after reboot %v, want %v", chain, want)
	}
	if rec.Boot != (updated.BootStatus{State: updated.BootCommitted, BootedVersion: "2.0.0", PreviousVersion: "1.0.0", Slot: "USR-B"}) {
		t.Fatalf("boot status %+v", rec.Boot)
	}
	sl = h.slots()
	if b := sl["USR-B"].Attr; b.Priority() != 2 || b.Tries() != 0 || !b.Successful() {
		t.Fatalf("USR-B after commit: %v, want P=2 T=0 S=1", b)
	}
	if got := srv.log(); got[len(got)-1] != "check prev=1.0.0" {
		t.Fatalf("the first check after the commit must carry previousversion=1.0.0: %v", got)
	}
	if len(rec.History) != 1 || rec.History[0].Outcome != updated.OutcomeCommitted || rec.History[0].ToVersion != "2.0.0" {
		t.Fatalf("history %+v", rec.History)
	}
	if b, err := os.ReadFile(h.dir + "/state/floor.json"); err != nil || !strings.Contains(string(b), `"floor":3`) {
		t.Fatalf("floor file %q, %v; want floor 3 after the commit", b, err)
	}
	// The next boot is steady.
	h.boot()
	r = h.start(srv.URL(), fast, 0)
	rec = waitState(t, r, "a steady boot", inState(updated.Idle))
	r.stop(t)
	if rec.Boot.State != updated.BootSteady || rec.Boot.BootedVersion != "2.0.0" {
		t.Fatalf("boot status %+v", rec.Boot)
	}
}

func TestUnhealthyRollsBack(t *testing.T) {
	h, srv := scenario(t, 3, true)
	toNeedReboot(t, h, srv)

	h.boot()
	r := h.start(srv.URL(), fast, 0)
	select {
	case <-h.rebootCh:
	case <-time.After(2 * time.Minute):
		t.Fatal("no reboot after the failed health gate")
	}
	rec := r.agent.Record()
	r.stop(t)
	if rec.State != updated.RollingBack || rec.Boot.State != updated.BootRolledBack || rec.Boot.PreviousVersion != "2.0.0" {
		t.Fatalf("before the reboot: %s %+v", rec.State, rec.Boot)
	}
	if !strings.Contains(rec.Failure.Message, "app.service") {
		t.Fatalf("the failure does not name the failed unit: %q", rec.Failure.Message)
	}
	if b := h.slots()["USR-B"].Attr; b.Priority() != 0 {
		t.Fatalf("USR-B after the failed gate: %v, want marked bad", b)
	}

	h.boot()
	if slot, v := h.running(); slot != "USR-A" || v != "1.0.0" {
		t.Fatalf("rebooted into %s %s, want USR-A 1.0.0", slot, v)
	}
	r = h.start(srv.URL(), fast, 0)
	rec = waitState(t, r, "the rollback reported", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.Rollback == nil && rec.LastChecked.Unix() > 0 && rec.Seq > 10
	})
	r.stop(t)
	log := srv.log()
	want := []string{"check prev=0.0.0.0", "event 13/1", "event 14/1", "event 3/1", "event 3/0/1001", "check rollback"}
	if !reflect.DeepEqual(log[:len(want)], want) {
		t.Fatalf("server saw %v, want it to start with %v", log, want)
	}
	if rec.Boot != (updated.BootStatus{State: updated.BootRolledBack, BootedVersion: "1.0.0", PreviousVersion: "2.0.0", Slot: "USR-A"}) {
		t.Fatalf("boot status %+v", rec.Boot)
	}
	if a := h.slots()["USR-A"].Attr; !a.Successful() || a.Priority() == 0 {
		t.Fatalf("USR-A after rollback: %v, want committed", a)
	}
	if len(rec.History) != 1 || rec.History[0].Outcome != updated.OutcomeRolledBack || rec.History[0].ErrorCode != updated.CodeHealthGateFailed {
		t.Fatalf("history %+v", rec.History)
	}
}

// markOldSlotBad marks USR-A bad on h's disk: a rollback to it is then refused, and a slot that
// fails its health gate is kept.
func markOldSlotBad(t *testing.T, h *host) {
	t.Helper()
	d, err := partition.Open(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	a, err := d.SlotByLabel("USR-A")
	if err == nil {
		err = d.MarkBad(a) // the old slot can no longer be rolled back to
	}
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
}

// A slot that failed its health gate and was kept because the rollback was refused is committed
// without advancing the floor, and no later start of the agent (in that boot or a later one)
// raises the floor to its security version either.
func TestKeptUnhealthyNeverRaisesFloor(t *testing.T) {
	h, srv := scenario(t, 3, true)
	toNeedReboot(t, h, srv)
	markOldSlotBad(t, h)
	h.boot()
	r := h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "the unhealthy slot kept", func(rec updated.Record) bool {
		return rec.State == updated.Idle && len(rec.History) > 0
	})
	r.stop(t)
	if o := rec.History[len(rec.History)-1].Outcome; o != updated.OutcomeKept {
		t.Fatalf("outcome %q, want %q", o, updated.OutcomeKept)
	}
	floorFile := h.dir + "/state/floor.json"
	if b, _ := os.ReadFile(floorFile); strings.Contains(string(b), `"floor":3`) {
		t.Fatalf("floor advanced when the unhealthy slot was kept: %s", b)
	}
	for _, restart := range []string{"an agent restart in the same boot", "the next boot"} {
		if restart == "the next boot" {
			h.boot()
		}
		r = h.start(srv.URL(), updated.Config{}, 0)
		waitState(t, r, "start", func(updated.Record) bool { return true })
		r.stop(t)
		if b, _ := os.ReadFile(floorFile); strings.Contains(string(b), `"floor":3`) {
			t.Fatalf("after %s the floor file is %s: raised to the security version of 2.0.0, which failed its health gate",
				restart, strings.TrimSpace(string(b)))
		}
	}
}

// A host that does not talk to a server keeps its rollback report pending. When it later boots
// an image installed by hand (what `payload apply` does) and that image passes its health gate,
// the boot is committed as such (BootStatus committed, so locksmithd releases its slot), not
// taken for the old slot committed after that rollback; the report stays pending.
func TestCommitWithUnreportedRollback(t *testing.T) {
	h, srv := scenario(t, 3, true)
	toNeedReboot(t, h, srv)
	h.boot() // 2.0.0 on trial, unhealthy
	r := h.start(srv.URL(), fast, 0)
	<-h.rebootCh
	r.stop(t)
	h.writeConf("disabled") // from now on the host does not talk to the server
	h.boot()                // back on USR-A 1.0.0
	r = h.start(srv.URL(), fast, 0)
	waitState(t, r, "the old slot committed", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.Rollback != nil
	})
	r.stop(t)

	d, err := partition.Open(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.SlotByLabel("USR-B")
	if err == nil {
		err = d.BeginInstall(b)
	}
	if err == nil {
		_, err = d.SlotWriter(b).WriteAt(image("2.1.0", false), 0)
	}
	if err == nil {
		err = d.Sync()
	}
	if err == nil {
		err = d.PrepareInstall(b)
	}
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	h.boot()
	if slot, v := h.running(); slot != "USR-B" || v != "2.1.0" {
		t.Fatalf("booted %s %s, want USR-B 2.1.0", slot, v)
	}
	r = h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "the hand-installed slot committed", inState(updated.Idle))
	bs := r.agent.BootStatus()
	r.stop(t)
	if !h.slots()["USR-B"].Attr.Successful() {
		t.Fatal("USR-B not marked good")
	}
	if bs.State != updated.BootCommitted || bs.BootedVersion != "2.1.0" {
		t.Fatalf("USR-B 2.1.0 passed its gate and was marked good, but the boot status is %+v", bs)
	}
	if rec.Rollback == nil || rec.Rollback.FailedVersion != "2.0.0" {
		t.Fatalf("the rollback report of 2.0.0 is no longer pending: %+v", rec.Rollback)
	}
}

func TestBadVersionNotReinstalled(t *testing.T) {
	h, srv := scenario(t, 3, true)
	toNeedReboot(t, h, srv)
	h.boot()
	r := h.start(srv.URL(), fast, 0)
	<-h.rebootCh
	r.stop(t)
	h.boot()
	r = h.start(srv.URL(), fast, 0)
	rec := waitState(t, r, "the offer refused", func(rec updated.Record) bool {
		return rec.State == updated.Idle && rec.LastError != nil && rec.LastError.Code == 35
	})
	if !rec.IsBad("2.0.0") || rec.Attempt != nil {
		t.Fatalf("bad versions %v attempt %+v", rec.BadVersions, rec.Attempt)
	}
	if got := srv.log(); got[len(got)-1] != "event 3/9/35" {
		t.Fatalf("the refusal is not reported as 3/9/35: %v", got)
	}
	// ResetStatus clears the list: the next check installs 2.0.0 again.
	if err := r.agent.ResetStatus(); err != nil {
		t.Fatal(err)
	}
	rec = waitState(t, r, "reset", func(rec updated.Record) bool { return rec.State == updated.Idle && len(rec.BadVersions) == 0 })
	r.agent.AttemptUpdate()
	waitState(t, r, "a new download", inState(updated.Downloading))
	r.stop(t)
}
