package simhost_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/simhost"
	"github.com/twinslot/twinslot/updated"
)

// images are built once: the disk with 1.0.0 in USR-A, a 2.0.0 /usr image built from it
// (5 % of the files changed) and a broken 2.0.0.
type images struct {
	disk, usr2, usr2Broken string
}

var (
	imagesOnce sync.Once
	imgs       images
	imgsErr    error
)

func buildImages(t *testing.T) images {
	imagesOnce.Do(func() {
		dir, err := mkdirTemp()
		if err != nil {
			imgsErr = err
			return
		}
		ctx := context.WithoutCancel(t.Context())
		size := testimages.SlotSize(testimages.MinDiskSize)
		usr1 := filepath.Join(dir, "usr-1.0.0.img")
		imgs = images{disk: filepath.Join(dir, "disk.img"), usr2: filepath.Join(dir, "usr-2.0.0.img"), usr2Broken: filepath.Join(dir, "usr-2.0.0-broken.img")}
		for _, step := range []func() error{
			func() error {
				return testimages.BuildUsr(ctx, usr1, testimages.UsrOptions{Version: "1.0.0", Size: size})
			},
			func() error {
				return testimages.BuildDisk(ctx, imgs.disk, testimages.DiskOptions{Usr: usr1, Size: testimages.MinDiskSize})
			},
			func() error {
				return testimages.BuildUsr(ctx, imgs.usr2, testimages.UsrOptions{Version: "2.0.0", Base: usr1, Change: 0.05})
			},
			func() error {
				return testimages.BuildUsr(ctx, imgs.usr2Broken, testimages.UsrOptions{Version: "2.0.0", Base: usr1, Change: 0.05, Broken: true})
			},
		} {
			if imgsErr = step(); imgsErr != nil {
				return
			}
		}
	})
	if imgsErr != nil {
		t.Fatalf("build images: %v", imgsErr)
	}
	return imgs
}

// fleet is one update server with a published 2.0.0 and one simulated host on 1.0.0.
type fleet struct {
	srv  *omahatest.Server
	host *simhost.Host
	key  *payloadtest.Key
}

func newFleet(t *testing.T, broken bool) *fleet {
	im := buildImages(t)
	s := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, key)
	s.CreateApp(t, payload.DefaultAppID, trust)
	usr := im.usr2
	if broken {
		usr = im.usr2Broken
	}
	p := filepath.Join(t.TempDir(), "2.0.0.tsp")
	o := payloadtest.Options("2.0.0")
	o.SecurityVersion = 2
	payloadtest.BuildFile(t, usr, p, o, key)
	s.Publish(t, "stable", p)
	h, err := simhost.New(t.Context(), t.TempDir(), simhost.Options{Disk: im.disk, Server: s.UpdateURL, Trust: trust,
		MachineID: omahatest.NewMachineID(), Conf: []string{"HEALTH_TIMEOUT=30s"}})
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{srv: s, host: h, key: key}
}

var errDone = errors.New("condition reached")

// runUntil runs the host's agent until done says so (nil), the host reboots (ErrRebooted) or
// something fails.
func runUntil(t *testing.T, h *simhost.Host, done func(updated.Record) bool) error {
	t.Helper()
	cfg := updated.Config{Schedule: updated.Schedule{Period: time.Hour, MaxInterval: 4 * time.Hour, MinPoll: time.Minute},
		HealthRetry: 100 * time.Millisecond, Logger: logger(t)}
	cfg.OnPersist = func(r updated.Record) error {
		if done(r) {
			return errDone
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	err := h.Run(ctx, cfg)
	switch {
	case errors.Is(err, errDone):
		return nil
	case ctx.Err() != nil:
		t.Fatal("the agent did not finish within 5 minutes")
	}
	return err
}

func committedAndReported(r updated.Record) bool {
	return r.State == updated.Idle && r.Boot.State == updated.BootCommitted && r.PrevVersionPref == ""
}

func eventLog(t *testing.T, s *omahatest.Server, machineID string) []string {
	var out []string
	for _, e := range s.Events(t, machineID) {
		if e.Type == int(omaha.EventTypeUpdateComplete) && e.Result == int(omaha.EventResultSuccessReboot) {
			if e.PreviousVersion != "" && e.PreviousVersion != "0.0.0.0" {
				out = append(out, "3/2 from "+e.PreviousVersion)
			}
			continue
		}
		s := fmt.Sprintf("%d/%d", e.Type, e.Result)
		if e.ErrorCode != 0 {
			s += fmt.Sprintf("/%d", e.ErrorCode)
		}
		out = append(out, s)
	}
	return out
}

// TestUpdateAndCommit is issue 5's first full cycle: a real update server, real ext4 images on
// a Flatcar-layout disk, a real signed payload; install, emulated reboot, healthy commit.
func TestUpdateAndCommit(t *testing.T) {
	f := newFleet(t, false)
	h := f.host
	if err := runUntil(t, h, func(r updated.Record) bool { return r.State == updated.UpdatedNeedReboot }); err != nil {
		t.Fatal(err)
	}
	if in := f.srv.Instance(t, h.MachineID); in.State != "installed" || in.GrantedVersion != "2.0.0" {
		t.Fatalf("server: instance %+v", in)
	}
	if _, _, err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	slot, rel, boots := h.Booted()
	if slot.Label != "USR-B" || rel.Version != "2.0.0" || boots != 2 {
		t.Fatalf("booted %s %s (boot %d), want USR-B 2.0.0", slot.Label, rel.Version, boots)
	}
	if err := runUntil(t, h, committedAndReported); err != nil {
		t.Fatal(err)
	}
	sl, err := h.Slots()
	if err != nil {
		t.Fatal(err)
	}
	if b := sl["USR-B"].Attr; !b.Successful() || b.Tries() != 0 || b.Priority() != 2 {
		t.Fatalf("USR-B %v, want committed", b)
	}
	in := f.srv.Instance(t, h.MachineID)
	if in.State != "complete" || in.Version != "2.0.0" {
		t.Fatalf("server: instance %+v, want complete on 2.0.0", in)
	}
	want := []string{"13/1", "14/1", "3/1", "3/2 from 1.0.0"}
	if got := eventLog(t, f.srv, h.MachineID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("server events %v, want %v", got, want)
	}
	// Another boot is steady, on the same slot.
	if _, _, err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	if slot, rel, _ := h.Booted(); slot.Label != "USR-B" || rel.Version != "2.0.0" {
		t.Fatalf("third boot: %s %s", slot.Label, rel.Version)
	}
}

// TestUnhealthyRollback: the new image boots but its health gate fails (a failed unit); the
// agent marks it bad, reports 3/0, reboots into the old slot, which it commits, and reports
// 3/0/44, after which the server stops offering that version to the host.
func TestUnhealthyRollback(t *testing.T) {
	f := newFleet(t, true)
	h := f.host
	if err := runUntil(t, h, func(r updated.Record) bool { return r.State == updated.UpdatedNeedReboot }); err != nil {
		t.Fatal(err)
	}
	h.Boot()
	err := runUntil(t, h, func(updated.Record) bool { return false })
	if !errors.Is(err, simhost.ErrRebooted) || h.Reboots() != 1 {
		t.Fatalf("after the failed gate: %v (reboots %d), want the agent's reboot", err, h.Reboots())
	}
	if _, _, err := h.Boot(); err != nil {
		t.Fatal(err)
	}
	slot, rel, _ := h.Booted()
	if slot.Label != "USR-A" || rel.Version != "1.0.0" {
		t.Fatalf("after the rollback reboot: %s %s, want USR-A 1.0.0", slot.Label, rel.Version)
	}
	var last updated.Record
	err = runUntil(t, h, func(r updated.Record) bool {
		last = r
		return r.State == updated.Idle && r.Rollback == nil && r.LastChecked.After(time.Time{}) && r.Boot.State == updated.BootRolledBack
	})
	if err != nil {
		t.Fatal(err)
	}
	if last.Boot != (updated.BootStatus{State: updated.BootRolledBack, BootedVersion: "1.0.0", PreviousVersion: "2.0.0", Slot: "USR-A"}) {
		t.Fatalf("boot status %+v", last.Boot)
	}
	sl, _ := h.Slots()
	if a := sl["USR-A"].Attr; !a.Successful() || a.Priority() == 0 {
		t.Fatalf("USR-A %v, want committed", a)
	}
	if b := sl["USR-B"].Attr; b.Priority() != 0 {
		t.Fatalf("USR-B %v, want marked bad", b)
	}
	in := f.srv.Instance(t, h.MachineID)
	if in.State != "rolledback" || in.RollbackVersion != "2.0.0" || in.Version != "1.0.0" {
		t.Fatalf("server: instance %+v", in)
	}
	want := []string{"13/1", "14/1", "3/1", fmt.Sprintf("3/0/%d", updated.CodeHealthGateFailed), "3/0/44"}
	if got := eventLog(t, f.srv, h.MachineID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("server events %v, want %v", got, want)
	}
	// The server no longer offers 2.0.0 to this host.
	hc := f.srv.Host(t, "stable", "1.0.0")
	hc.MachineID = h.MachineID
	if u := hc.Check(t); u != nil {
		t.Fatalf("the server offers %s again after the rollback", u.Version)
	}
}

// TestLive runs the machine on its own (reboots included) until the update is committed.
func TestLive(t *testing.T) {
	f := newFleet(t, false)
	h := f.host
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cfg := updated.Config{Schedule: updated.Schedule{Period: time.Hour, MaxInterval: 4 * time.Hour, MinPoll: time.Minute}, Logger: logger(t)}
	cfg.OnPersist = func(r updated.Record) error {
		switch {
		case r.State == updated.UpdatedNeedReboot:
			go h.Reboot(ctx) // what a reboot coordinator does when it may
		case committedAndReported(r):
			cancel()
		}
		return nil
	}
	if err := h.Live(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if slot, rel, boots := h.Booted(); slot.Label != "USR-B" || rel.Version != "2.0.0" || boots != 2 {
		t.Fatalf("live: %s %s after %d boots", slot.Label, rel.Version, boots)
	}
	// A fleet runs many hosts in one process: a stopped host leaves no goroutines behind.
	var n int
	for i := 0; i < 500; i++ {
		if n = runtime.NumGoroutine(); n <= before+1 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("%d goroutines after the host stopped, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
}
