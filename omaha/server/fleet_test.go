package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// fleet is a simulated fleet: hosts per group (named after its channel), all checking in each
// round, in parallel, the way update_engine does.
type fleet struct {
	s     *omahatest.Server
	c     *clock
	hosts map[string][]*omahatest.Host
	// broken is the version whose offer a host answers with a failed update (3/0, health gate)
	// instead of installing it.
	broken string

	mu      sync.Mutex
	offered map[string][]int // "group version" → positions of the hosts offered it
}

// offer is one update offered to a host of group at its wave position.
func (f *fleet) offer(group, version string, pos int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := group + " " + version
	f.offered[k] = append(f.offered[k], pos)
}

// round lets every host check in once (an offered host installs, reboots and checks again, or
// fails a broken version), except those already running what their channel carries (their
// answer is noupdate whatever the policy says; leaving them out keeps the test quick), then lets the server do what its tickers would (write, open waves,
// promote), and moves the clock on by half an hour. Before the hosts check, it reads each
// group's open wave; an offer to a host outside it fails the test.
func (f *fleet) round(t *testing.T) {
	t.Helper()
	st := f.s.Status(t)
	share := map[string]admin.Rollout{}
	for _, g := range st.Groups {
		if g.Rollout != nil {
			share[g.Group.Name] = *g.Rollout
		}
	}
	carried := map[string]string{}
	for _, ch := range st.Channels {
		carried[ch.Name] = ch.Packages["amd64-usr"].Version
	}
	work := make(chan *omahatest.Host)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for h := range work {
				u := h.Check(t)
				if u == nil {
					continue
				}
				pos := store.WavePosition(h.AppID, h.MachineID)
				if r := share[h.Track]; r.Version == u.Version && float64(pos) >= r.SharePercent*store.WaveScale/100 {
					t.Errorf("host of %s at position %d offered %s while the open wave is %v%%", h.Track, pos, u.Version, r.SharePercent)
				}
				f.offer(h.Track, u.Version, pos)
				if u.Version == f.broken {
					h.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCode(1001))
					continue
				}
				h.Install(t)
				h.Reboot(u.Version)
				h.Check(t)
			}
		})
	}
	for _, ch := range store.Channels {
		for _, h := range f.hosts[ch] {
			if carried[ch] != "" && server.CompareVersions(h.Version, carried[ch]) < 0 {
				work <- h
			}
		}
	}
	close(work)
	wg.Wait()
	f.s.Flush(t)
	ctx := t.Context()
	if err := f.s.Server.AdvanceWavesOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Server.AutoPromoteOnce(ctx); err != nil {
		t.Fatal(err)
	}
	f.c.Add(30 * time.Minute)
}

// running counts the hosts of group that run version.
func (f *fleet) running(group, version string) int {
	n := 0
	for _, h := range f.hosts[group] {
		if h.Version == version {
			n++
		}
	}
	return n
}

// TestFleetRollout is the proof of issue 16's gates and waves: 200 simulated hosts per channel
// group. A good build published to alpha reaches every host of alpha, beta and stable by
// itself: each group rolls it out in waves (10%, 50%, 100%, an hour's soak each, the same hosts
// first), and each channel's automatic gate (an hour's soak, 150 hosts committed, no failures)
// promotes it once the group before has it. A broken build stops at its first wave: the alpha
// hosts of that wave fail it, the group halts, no host beyond the wave is ever offered it, and
// it is never promoted.
func TestFleetRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("fleet simulation of 600 hosts: skipped in -short mode")
	}
	const perGroup = 200
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) {
		cfg.Now, cfg.AutoPromoteEvery, cfg.AdvanceWavesEvery, cfg.FlushInterval = c.Now, -1, -1, time.Millisecond
	}))
	ctx := t.Context()
	for _, ch := range []string{"beta", "stable"} {
		if _, err := s.Admin.SetGate(ctx, s.App, admin.Gate{Channel: ch, MinSoak: admin.Duration(time.Hour), MinCommitted: 150, Auto: true}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fleet{s: s, c: c, hosts: map[string][]*omahatest.Host{}, offered: map[string][]int{}, broken: "1.2.0"}
	for _, ch := range store.Channels {
		s.UpdateGroup(t, ch, admin.GroupChange{Waves: new("10%:1h,50%:1h,100%"), HaltOnFailures: new(int64(1))})
		for range perGroup {
			f.hosts[ch] = append(f.hosts[ch], s.Host(t, ch, "1.0.0"))
		}
	}
	start := c.Now()
	s.Publish(t, "alpha", s.BuildPayload(t, "1.1.0", key))
	rounds := 0
	for ; f.running("stable", "1.1.0") < perGroup; rounds++ {
		if rounds == 40 {
			t.Fatalf("after %d rounds (%s): alpha %d, beta %d, stable %d of %d hosts run 1.1.0; status %+v", rounds, c.Now().Sub(start),
				f.running("alpha", "1.1.0"), f.running("beta", "1.1.0"), f.running("stable", "1.1.0"), perGroup, s.Status(t).Groups)
		}
		f.round(t)
	}
	t.Logf("1.1.0 reached all %d hosts in %d rounds (%s of fleet time)", 3*perGroup, rounds, c.Now().Sub(start))
	for _, ch := range store.Channels {
		if n := f.running(ch, "1.1.0"); n != perGroup {
			t.Errorf("%s: %d of %d hosts run 1.1.0", ch, n, perGroup)
		}
		// Each wave offered its share: the first two waves' hosts are the lowest positions.
		if got := len(f.offered[ch+" 1.1.0"]); got != perGroup {
			t.Errorf("%s: %d offers of 1.1.0 to %d hosts", ch, got, perGroup)
		}
	}

	// A broken build: alpha's first-wave hosts fail it; the group halts at once.
	f.offered = map[string][]int{}
	s.Publish(t, "alpha", s.BuildPayload(t, "1.2.0", key))
	for range 8 { // four hours: far beyond every soak and gate
		f.round(t)
	}
	bad := f.offered["alpha 1.2.0"]
	if len(bad) == 0 {
		t.Fatal("no alpha host was offered 1.2.0")
	}
	for _, pos := range bad {
		if pos >= 1000 {
			t.Errorf("an alpha host at position %d (beyond the 10%% wave) was offered the broken build", pos)
		}
	}
	for k := range f.offered {
		if k != "alpha 1.2.0" {
			t.Errorf("offers after the broken build: %s %v", k, f.offered[k])
		}
	}
	alpha := groupStatus(t, s, "alpha")
	if alpha.Group.Policy.Enabled || !strings.Contains(alpha.Group.Policy.HaltedReason, "version 1.2.0") {
		t.Errorf("alpha after the broken build: %+v", alpha.Group.Policy)
	}
	if r := alpha.Rollout; r == nil || r.Version != "1.2.0" || r.Wave != 0 || r.Held != "halted" {
		t.Errorf("alpha's rollout after the broken build: %+v", r)
	}
	for _, ch := range []string{"beta", "stable"} {
		if v := carries(t, s, ch); v != "1.1.0" {
			t.Errorf("%s carries %s after the broken build", ch, v)
		}
	}
	// The server's own changes, oldest first: each group's three waves for 1.1.0 and the two
	// promotions between them, then the broken build's first wave and the halt.
	page, err := s.Admin.Audit(ctx, admin.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(page.Entries) - 1; i >= 0; i-- {
		if e := page.Entries[i]; e.Who == "omahad" {
			got = append(got, fmt.Sprintf("%s %s", e.Action, e.Target[strings.LastIndexByte(e.Target, '/')+1:]))
		}
	}
	want := strings.Join([]string{
		"group.wave alpha", "group.wave alpha", "group.wave alpha", "promote.auto beta",
		"group.wave beta", "group.wave beta", "group.wave beta", "promote.auto stable",
		"group.wave stable", "group.wave stable", "group.wave stable",
		"group.halt alpha", "group.wave alpha",
	}, ", ")
	if strings.Join(got, ", ") != want {
		t.Errorf("the server's audit entries:\n%s\nwant\n%s", strings.Join(got, ", "), want)
	}
}
