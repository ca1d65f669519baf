package updated_test

import (
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated"
)

// withFailingGPT is cfg with the agent's GPT writes going through testimages.FailingGPT, and the log.
func withFailingGPT(cfg updated.Config, f testimages.FailingGPT) (updated.Config, *omahatest.SyncBuffer) {
	updated.WrapGPT(&cfg, func(d *partition.Disk) updated.GPTWriter { f.Disk = d; return f })
	log := &omahatest.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	return cfg, log
}

// health reads the state of the host disk's GPT copies.
func (h *host) health() partition.Health {
	h.t.Helper()
	d, err := partition.Open(h.disk, partition.ReadOnly())
	if err != nil {
		h.t.Fatal(err)
	}
	defer d.Close()
	hl, err := d.Health()
	if err != nil {
		h.t.Fatal(err)
	}
	return hl
}

// commitBoth makes USR-B an older committed slot (P=1 S=1) behind the running USR-A (P=2 S=1).
func (h *host) commitBoth() {
	h.t.Helper()
	d, err := partition.Open(h.disk)
	if err != nil {
		h.t.Fatal(err)
	}
	defer d.Close()
	for _, label := range []string{"USR-B", "USR-A"} {
		s, err := d.SlotByLabel(label)
		if err == nil {
			err = d.MarkGood(s)
		}
		if err != nil {
			h.t.Fatal(err)
		}
	}
}

const appliedWarning = "a GPT write failed, but the change is in effect"

// TestInstallGPTWriteFails: an install whose GPT write fails fails only when the change is not
// in effect; a flip that took effect nonetheless arms the new slot, so the install is reported
// as done (3/1), the stale copy is repaired when it can be, and the new slot boots.
func TestInstallGPTWriteFails(t *testing.T) {
	errRepair := errors.New("repair: input/output error")
	for _, tc := range []struct {
		name      string
		gpt       testimages.FailingGPT
		wantCode  int  // the install fails with it; 0: it succeeds
		wantSync  bool // the GPT copies agree afterwards (repaired)
		wantInLog string
		// previous: USR-B holds an older committed image (P=1 S=1), as after an earlier update,
		// so that BeginInstall changes its bits.
		previous bool
	}{
		{name: "flip failed, not in effect", gpt: testimages.FailingGPT{Op: "PrepareInstall"}, wantCode: updated.CodePostinstallRunnerError, wantSync: true,
			wantInLog: "the change did not take effect"},
		{name: "begin install failed, not in effect", gpt: testimages.FailingGPT{Op: "BeginInstall"}, previous: true, wantCode: updated.CodeDownloadWriteError, wantSync: true,
			wantInLog: "the change did not take effect"},
		{name: "flip failed, in effect", gpt: testimages.FailingGPT{Op: "PrepareInstall", Applied: true}, wantSync: true,
			wantInLog: "repaired the GPT after the failed write"},
		{name: "flip failed, in effect, repair fails", gpt: testimages.FailingGPT{Op: "PrepareInstall", Applied: true, RepairErr: errRepair},
			wantInLog: "updatectl slots --repair"},
		{name: "begin install failed, in effect", gpt: testimages.FailingGPT{Op: "BeginInstall", Applied: true}, previous: true, wantSync: true,
			wantInLog: appliedWarning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, srv := scenario(t, 3, false)
			if tc.previous {
				h.commitBoth()
			}
			cfg, log := withFailingGPT(fast, tc.gpt)
			r := h.start(srv.URL(), cfg, 0)
			rec := waitState(t, r, "the install done or failed", func(rec updated.Record) bool {
				return rec.State == updated.UpdatedNeedReboot || rec.State == updated.Idle && rec.LastError != nil
			})
			r.stop(t)
			if !strings.Contains(log.String(), tc.wantInLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantInLog, log)
			}
			if got := h.health(); got.InSync != tc.wantSync || !tc.wantSync && got.PrimaryErr == nil {
				t.Errorf("GPT health %+v, want in sync %v", got, tc.wantSync)
			}
			srvLog := srv.log()
			if tc.wantCode != 0 {
				if rec.State != updated.Idle || rec.LastError.Code != tc.wantCode {
					t.Fatalf("%s, last error %+v; want code %d", rec.State, rec.LastError, tc.wantCode)
				}
				if b := h.slots()["USR-B"].Attr; b.Priority() != 0 && !tc.previous || b.Priority() >= h.slots()["USR-A"].Attr.Priority() {
					t.Fatalf("USR-B after a failed install: %v, want it unbootable or behind USR-A", b)
				}
				if got := srvLog[len(srvLog)-1]; !strings.HasPrefix(got, "event 3/0/") {
					t.Fatalf("server saw %v, want a 3/0 error event last", srvLog)
				}
				return
			}
			if rec.State != updated.UpdatedNeedReboot || rec.LastError != nil {
				t.Fatalf("%s, last error %+v; want UPDATED_NEED_REBOOT", rec.State, rec.LastError)
			}
			if want := []string{"check prev=0.0.0.0", "event 13/1", "event 14/1", "event 3/1"}; !reflect.DeepEqual(srvLog, want) {
				t.Fatalf("server saw %v, want %v", srvLog, want)
			}
			if !strings.Contains(log.String(), appliedWarning) || !strings.Contains(log.String(), "took effect nonetheless") {
				t.Fatalf("no warning with the write error in the log:\n%s", log)
			}
			h.boot()
			if slot, v := h.running(); slot != "USR-B" || v != "2.0.0" {
				t.Fatalf("booted %s %s, want USR-B 2.0.0", slot, v)
			}
		})
	}
}

// TestLaterGPTWritesInEffect: a commit, a rollback or a reset whose GPT write failed but took
// effect is done: the slot is committed, the host reboots into the old slot with the bad one
// marked, the cancelled slot is not booted.
func TestLaterGPTWritesInEffect(t *testing.T) {
	t.Run("commit", func(t *testing.T) {
		h, srv := scenario(t, 3, false)
		toNeedReboot(t, h, srv)
		h.boot()
		cfg, log := withFailingGPT(fast, testimages.FailingGPT{Op: "MarkGood", Applied: true})
		r := h.start(srv.URL(), cfg, 0)
		rec := waitState(t, r, "committed", func(rec updated.Record) bool { return rec.Boot.State == updated.BootCommitted })
		r.stop(t)
		if b := h.slots()["USR-B"].Attr; !b.Successful() || b.Priority() != 2 {
			t.Fatalf("USR-B after the commit: %v", b)
		}
		if rec.LastError != nil || !h.health().InSync || !strings.Contains(log.String(), appliedWarning) {
			t.Fatalf("last error %+v, health %+v, log:\n%s", rec.LastError, h.health(), log)
		}
	})
	for _, op := range []string{"Rollback", "MarkBad"} {
		t.Run("rollback: "+op, func(t *testing.T) {
			h, srv := scenario(t, 3, true)
			toNeedReboot(t, h, srv)
			h.boot()
			cfg, log := withFailingGPT(fast, testimages.FailingGPT{Op: op, Applied: true})
			r := h.start(srv.URL(), cfg, 0)
			select {
			case <-h.rebootCh:
			case err := <-r.done:
				r.done <- err
				t.Fatalf("agent stopped (%v) before the reboot", err)
			case <-time.After(2 * time.Minute):
				t.Fatal("no reboot after the failed health gate")
			}
			r.stop(t)
			if b := h.slots()["USR-B"].Attr; b.Priority() != 0 {
				t.Fatalf("USR-B after the failed gate: %v, want marked bad", b)
			}
			if !strings.Contains(log.String(), appliedWarning) {
				t.Fatalf("log:\n%s", log)
			}
			h.boot()
			if slot, _ := h.running(); slot != "USR-A" {
				t.Fatalf("rebooted into %s, want USR-A", slot)
			}
		})
	}
	t.Run("reset", func(t *testing.T) {
		h, srv := scenario(t, 3, false)
		cfg, log := withFailingGPT(fast, testimages.FailingGPT{Op: "MarkBad", Applied: true})
		r := h.start(srv.URL(), cfg, 0)
		waitState(t, r, "NEED_REBOOT", inState(updated.UpdatedNeedReboot))
		if err := r.agent.ResetStatus(); err != nil {
			t.Fatal(err)
		}
		var chain []updated.State
		waitState(t, r, "reset done", func(rec updated.Record) bool {
			chain = append(chain, rec.State)
			return rec.State == updated.Idle
		})
		r.stop(t)
		if !reflect.DeepEqual(chain, []updated.State{updated.Resetting, updated.Idle}) || !strings.Contains(log.String(), appliedWarning) {
			t.Fatalf("chain %v, log:\n%s", chain, log)
		}
		h.boot()
		if slot, _ := h.running(); slot != "USR-A" {
			t.Fatalf("booted %s after the update was cancelled", slot)
		}
	})
}

// TestForeignGPTRefused: on a disk grown after the image was written (a valid GPT whose backup
// is not at the end), partition refuses every write; the install fails before any byte is
// written, as an install device error whose message says what to run.
func TestForeignGPTRefused(t *testing.T) {
	h, srv := scenario(t, 3, false)
	st, err := os.Stat(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(h.disk, st.Size()+1<<20); err != nil {
		t.Fatal(err)
	}
	before := fileHash(t, h.disk)
	rec := failOnce(t, h, srv)
	if rec.LastError.Code != updated.CodeInstallDeviceOpenError || !strings.Contains(rec.LastError.Message, "sgdisk -e") {
		t.Fatalf("last error %+v, want code %d naming sgdisk -e", rec.LastError, updated.CodeInstallDeviceOpenError)
	}
	if fileHash(t, h.disk) != before {
		t.Fatal("the foreign disk was written")
	}
}
