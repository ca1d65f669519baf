package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages/fleet"
	"github.com/twinslot/twinslot/updated"
)

const (
	hosts    = 6
	maxSlots = 2
	group    = "stable"
)

func logger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tw{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.DiscardHandler)
}

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// rebootWatch counts, from the fleet's events alone, the hosts between "reboot requested" and
// "booted", and remembers the worst moment.
type rebootWatch struct {
	mu        sync.Mutex
	down      map[string]bool
	peak      int
	reported  int // the largest Event.Rebooting seen
	bad       []string
	requested int
}

func (w *rebootWatch) onEvent(t *testing.T) func(fleet.Event) {
	return func(e fleet.Event) {
		if testing.Verbose() {
			t.Logf("%s %-7s %s", e.At.Format("15:04:05.000"), e.Host, e.Text)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		switch e.Kind {
		case fleet.EventRebootRequested:
			w.down[e.Host] = true
			w.requested++
		case fleet.EventBooted:
			delete(w.down, e.Host)
		}
		w.peak = max(w.peak, len(w.down))
		w.reported = max(w.reported, e.Rebooting)
		if len(w.down) > maxSlots || e.Rebooting > maxSlots {
			w.bad = append(w.bad, fmt.Sprintf("%s: %d hosts rebooting (fleet says %d): %s %s", e.At.Format(time.StampMilli), len(w.down), e.Rebooting, e.Host, e.Text))
		}
	}
}

// TestRollout is issue 7's end-to-end flow with everything real: omahad (SQLite), embedded
// etcd, six hosts each running the update agent and locksmithd on their own disk image. 1.0.1
// goes out to all with at most two rebooting at once; then a broken 1.0.2 under "one update
// per hour, halt on one failure": the one host that takes it fails the health gate, rolls back
// to 1.0.1, keeps its reboot slot, the server halts the group, and nobody else gets 1.0.2.
func TestRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the fleet rollout (six hosts, real server and etcd)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	im, err := fleet.BuildImages(ctx, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var clk fleet.Clock
	srv := omahatest.New(t, omahatest.WithConfig(func(c *server.Config) { c.Now = clk.Now }))
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, key)
	srv.CreateApp(t, payload.DefaultAppID, trust)
	buildPayload := func(usr, version string) string {
		p := filepath.Join(dir, version+".tsp")
		payloadtest.BuildFile(t, usr, p, payloadtest.Options(version), key)
		return p
	}
	srv.Publish(t, "alpha", buildPayload(im.Good, fleet.VersionGood))
	srv.Promote(t, fleet.VersionGood, "alpha", group)

	e := etcdtest.New(t)
	store := locksmith.NewStore(e.Client, "", nil)
	if _, err := store.SetMax(ctx, group, maxSlots); err != nil {
		t.Fatal(err)
	}
	w := &rebootWatch{down: map[string]bool{}}
	f, err := fleet.New(ctx, fleet.Config{
		Hosts: hosts, Dir: filepath.Join(dir, "hosts"), Disk: im.Disk, Server: srv.UpdateURL, Group: group,
		Trust: trust, Etcd: e.NewClient(t), Logger: logger(t), OnEvent: w.onEvent(t),
		Timings: fleet.Timings{CheckInterval: 500 * time.Millisecond, HealthTimeout: 2 * time.Second, RebootDuration: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- f.Run(rctx) }()
	defer func() {
		stop()
		<-runErr
	}()

	// Phase 1: 1.0.1 reaches every host, committed, and every slot is given back.
	if st, err := f.Wait(ctx, func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if h.Version != fleet.VersionGood || !h.Committed || h.Operation != "idle" || h.Lock != string(reboot.StateIdle) {
				return false
			}
		}
		return len(s.Holders) == 0
	}); err != nil {
		t.Fatalf("1.0.1 did not reach every host: %v\n%s", err, dump(st))
	}

	// Phase 2: a broken 1.0.2 under one update per hour and halt on the first failure. The
	// server's clock jumps an hour so 1.0.1's grants leave the rate window.
	one := int64(1)
	hour := admin.Duration(time.Hour)
	srv.UpdateGroup(t, group, admin.GroupChange{MaxUpdates: &one, Period: &hour, HaltOnFailures: &one})
	clk.Advance(time.Hour + time.Minute)
	srv.Publish(t, "alpha", buildPayload(im.Broken, fleet.VersionBroken))
	srv.Promote(t, fleet.VersionBroken, "alpha", group)

	rolledBack := func(h fleet.Host) bool {
		return h.BootState == updated.BootRolledBack && h.Lock == string(reboot.StateRolledBack)
	}
	st, err := f.Wait(ctx, func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if rolledBack(h) && h.Operation == "idle" {
				sl, ok := s.Holder(h.MachineID)
				return ok && sl.Holder.State == locksmith.HolderRolledBack
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no host rolled back from 1.0.2: %v\n%s", err, dump(st))
	}
	srv.Flush(t)
	g, err := srv.Admin.Group(ctx, srv.App, group)
	if err != nil {
		t.Fatal(err)
	}
	if g.Policy.Enabled || !strings.Contains(g.Policy.HaltedReason, fleet.VersionBroken) {
		t.Fatalf("the server did not halt the group: %+v", g.Policy)
	}
	// The rollout stopped: every host checks in twice more and none takes 1.0.2.
	checks := map[string]int{}
	for _, h := range st.Hosts {
		checks[h.Name] = h.Checks
	}
	if st, err = f.Wait(ctx, func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if h.Checks < checks[h.Name]+2 || h.Operation != "idle" {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("hosts stopped checking: %v\n%s", err, dump(st))
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("fleet: %v", err)
	}
	runErr <- nil // for the deferred stop
	t.Logf("final state:\n%s", dump(st))

	// Never more than max hosts rebooting: from the fleet's events…
	w.mu.Lock()
	if len(w.bad) > 0 || w.peak == 0 || w.requested < hosts+2 {
		t.Errorf("reboots: peak %d, %d requested, violations:\n%s", w.peak, w.requested, strings.Join(w.bad, "\n"))
	}
	w.mu.Unlock()
	// …and from etcd, every revision since the first.
	peak := checkSemaphore(t, ctx, e.Client, store.GroupKeyPrefix(group))
	if peak == 0 {
		t.Error("etcd never saw a holder")
	}

	brokenBoots := 0
	for i, h := range st.Hosts {
		for _, b := range h.Boots {
			if b.Version == fleet.VersionBroken {
				brokenBoots++
			}
		}
		// Every host ends on 1.0.1, committed: the GPT says so, and the agent is idle.
		sh := f.Hosts()[i]
		slot, rel, _ := sh.Booted()
		slots, err := sh.Slots()
		if err != nil {
			t.Fatal(err)
		}
		if rel.Version != fleet.VersionGood || !slots[slot.Label].Attr.Successful() || h.Operation != "idle" || !h.Committed {
			t.Errorf("%s: runs %s from %s (%v), agent %s; want 1.0.1 committed and idle", h.Name, rel.Version, slot.Label, slots[slot.Label].Attr, h.Operation)
		}
		want := "1.0.0 A → 1.0.1 B ✓"
		if rolledBack(h) {
			want += " → 1.0.2 A ✗ → 1.0.1 B ↩"
			sl, ok := st.Holder(h.MachineID)
			if !ok || sl.Holder.State != locksmith.HolderRolledBack || sl.Holder.ToVersion != fleet.VersionBroken {
				t.Errorf("%s rolled back but its slot is %+v (held %v)", h.Name, sl, ok)
			}
			if in := srv.Instance(t, h.MachineID); in.State != "rolledback" || in.RollbackVersion != fleet.VersionBroken {
				t.Errorf("%s: the server says %s (rollback version %q), want rolledback from %s", h.Name, in.State, in.RollbackVersion, fleet.VersionBroken)
			}
			// An operator releases the slot (locksmithctl unlock --force).
			if _, err := store.Unlock(ctx, group, "operator", h.MachineID, true); err != nil {
				t.Fatalf("force unlock: %v", err)
			}
		}
		if got := h.History(); got != want {
			t.Errorf("%s: history %q, want %q", h.Name, got, want)
		}
	}
	// The broken version reached one host: within the slot limit, and exactly what the rate allows.
	if brokenBoots != 1 {
		t.Errorf("%d boots into the broken %s, want 1 (rate 1, halt on 1, max %d)", brokenBoots, fleet.VersionBroken, maxSlots)
	}
	if ls, err := store.State(ctx, group); err != nil || len(ls.Slots) != 0 {
		t.Errorf("after the operator's unlock: slots %+v, %v", ls.Slots, err)
	}
	if in := srv.Instances(t); len(in) != hosts {
		t.Errorf("the server knows %d hosts, want %d", len(in), hosts)
	}
}

// checkSemaphore replays every etcd event under the group's prefix from revision 1 and fails
// the test if the slots ever outnumber max at a revision. It returns the most holders seen.
func checkSemaphore(t *testing.T, ctx context.Context, cli *clientv3.Client, prefix string) int {
	t.Helper()
	end := prefix + "zz-e2e-end" // not a key locksmith reads: marks where the replay stops
	if _, err := cli.Put(ctx, end, "end"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slots := map[string]bool{}
	maxHolders, peak, revisions := 1, 0, 0
	check := func(rev int64) {
		revisions++
		peak = max(peak, len(slots))
		if len(slots) > maxHolders {
			t.Errorf("revision %d: %d holders, max %d", rev, len(slots), maxHolders)
		}
	}
	for resp := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1)) {
		if err := resp.Err(); err != nil {
			t.Fatalf("watch: %v", err)
		}
		for i, ev := range resp.Events {
			k := string(ev.Kv.Key)
			switch {
			case k == end:
				check(ev.Kv.ModRevision)
				t.Logf("etcd: %d revisions replayed, at most %d holders (max %d)", revisions, peak, maxHolders)
				return peak
			case k == prefix+"config" && ev.Type == clientv3.EventTypePut:
				var c locksmith.GroupConfig
				if err := json.Unmarshal(ev.Kv.Value, &c); err != nil {
					t.Fatalf("config at revision %d: %v", ev.Kv.ModRevision, err)
				}
				maxHolders = c.Max
			case strings.HasPrefix(k, prefix+"slots/"):
				slots[k] = ev.Type == clientv3.EventTypePut
				if !slots[k] {
					delete(slots, k)
				}
			}
			if i == len(resp.Events)-1 || resp.Events[i+1].Kv.ModRevision != ev.Kv.ModRevision {
				check(ev.Kv.ModRevision)
			}
		}
	}
	t.Fatal("the watch ended before the end marker")
	return 0
}

func dump(s fleet.State) string {
	var b strings.Builder
	for _, h := range s.Hosts {
		fmt.Fprintf(&b, "%s %s %s committed=%v op=%s boot=%s lock=%s (%s) checks=%d history: %s %s\n", h.Name, h.Version, h.Slot,
			h.Committed, h.Operation, h.BootState, h.Lock, h.LockDetail, h.Checks, h.History(), h.Err)
	}
	b.WriteString(s.HoldersText())
	return b.String()
}
