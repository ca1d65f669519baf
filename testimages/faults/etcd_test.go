package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/locksmithctl"
	"github.com/twinslot/twinslot/tools/cli"
)

const (
	faultGroup = "faults"
	faultMax   = 2
	// lockTimeout bounds one Lock call of a machine: during a fault the calls fail and say why.
	lockTimeout = 3 * time.Second
)

// member is one etcd process of the cluster.
type member struct {
	name, client, peer string
	p                  *proc
}

type cluster struct {
	members []*member
}

// startCluster starts n members of the system's etcd on loopback ports, data in dir.
func startCluster(t *testing.T, bin, dir string, n int) *cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &cluster{}
	var initial []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), client: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), peer: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	for _, m := range c.members {
		m.p = newProc(t, dir, "etcd-"+m.name, bin,
			"--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "twinslot-faults", "--heartbeat-interval", "100", "--election-timeout", "1000",
			"--logger", "zap", "--log-level", "warn")
		m.p.start(t)
	}
	for _, m := range c.members {
		c.waitHealthy(t, m)
	}
	return c
}

func (c *cluster) endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	return eps
}

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitHealthy waits until m answers a linearizable read.
func (c *cluster) waitHealthy(t *testing.T, m *member) {
	t.Helper()
	cli := newClient(t, m.client)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := cli.Get(clientv3.WithRequireLeader(ctx), "health")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || m.p.exited() {
			t.Fatalf("etcd %s not healthy: %v (log %s)", m.name, err, m.p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leader returns the member that leads now.
func (c *cluster) leader(t *testing.T) *member {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.members {
			cli := newClient(t, m.client)
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			st, err := cli.Status(ctx, m.client)
			cancel()
			cli.Close()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return m
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no etcd leader within 30s")
	return nil
}

// moveLeader hands leadership from the leader from to the member to.
func (c *cluster) moveLeader(t *testing.T, from, to *member) {
	t.Helper()
	cli := newClient(t, from.client)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := newClient(t, to.client).Status(ctx, to.client)
	if err != nil {
		t.Fatalf("status of %s: %v", to.name, err)
	}
	if _, err := cli.MoveLeader(ctx, st.Header.MemberId); err != nil {
		t.Fatalf("move the leader from %s to %s: %v", from.name, to.name, err)
	}
}

// grant is a slot a machine was told it holds (or released).
type grant struct {
	id      string
	index   int
	token   int64
	started time.Time // when the Lock call began
	at      time.Time // when it returned
}

// contention is the machines' side of the run: what they were told.
type contention struct {
	mu        sync.Mutex
	phase     string
	grants    []grant
	releases  []grant
	errs      map[string]map[string]int // phase -> cause -> count
	bare      []string                  // errors that do not name the group and a cause
	holding   int
	peak      map[string]int    // phase -> client-view peak
	lostSlot  int               // Release said ErrLost at once: someone broke a slot (nobody should)
	ambiguous int               // Release said ErrLost after a failed attempt that had committed
	polled    map[string]int    // phase -> peak holders seen by polling
	samples   map[string]string // cause -> first message
}

func newContention() *contention {
	return &contention{errs: map[string]map[string]int{}, peak: map[string]int{}, polled: map[string]int{}, samples: map[string]string{}, phase: "baseline"}
}

func (c *contention) setPhase(p string) {
	c.mu.Lock()
	c.phase = p
	c.mu.Unlock()
}

// label classifies a client error for the table, and records it as bare if it does not say
// which group and what happened.
func (c *contention) fail(err error) {
	var ee *locksmith.EtcdError
	label := ""
	switch {
	case errors.As(err, &ee) && ee.Group == faultGroup:
		label = ee.Cause.String()
	case strings.Contains(err.Error(), `group "`+faultGroup+`": gave up waiting for a free slot`):
		label = "full-until-deadline"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if label == "" {
		label = "bare"
		if len(c.bare) < 5 {
			c.bare = append(c.bare, err.Error())
		}
	}
	if c.samples[label] == "" {
		c.samples[label] = err.Error()
	}
	if c.errs[c.phase] == nil {
		c.errs[c.phase] = map[string]int{}
	}
	c.errs[c.phase][label]++
}

func (c *contention) acquired(g grant) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.grants = append(c.grants, g)
	c.holding++
	c.peak[c.phase] = max(c.peak[c.phase], c.holding)
}

func (c *contention) releasing() {
	c.mu.Lock()
	c.holding--
	c.mu.Unlock()
}

// released records a release. lost: the store said the slot was no longer this tenure. After
// an earlier attempt failed that is the ambiguous case (the first attempt committed, its answer
// was lost): the release counts, and the replay must show it; without one, somebody broke the
// slot, which nobody may do in this run.
func (c *contention) released(g grant, lost, retried bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case lost && !retried:
		c.lostSlot++
		return
	case lost:
		c.ambiguous++
	}
	c.releases = append(c.releases, g)
}

func (c *contention) sawHolders(n int) {
	c.mu.Lock()
	c.polled[c.phase] = max(c.polled[c.phase], n)
	c.mu.Unlock()
}

// firstLockAfter is how long after at the first grant returned to a machine accepted by who
// (nil: all) whose slot was written after revision rev; -1 if none.
func (c *contention) firstLockAfter(at time.Time, rev int64, who func(id string) bool) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := time.Duration(-1)
	for _, g := range c.grants {
		if !g.at.After(at) || g.token <= rev || (who != nil && !who(g.id)) {
			continue
		}
		if d := g.at.Sub(at); best < 0 || d < best {
			best = d
		}
	}
	return best
}

// machine takes and gives back a slot until stop, retrying through every fault.
func machine(ctx context.Context, s *locksmith.Store, id string, c *contention, stop <-chan struct{}, done func()) {
	defer done()
	rng := rand.New(rand.NewPCG(uint64(len(id)), uint64(id[len(id)-1])))
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		lctx, cancel := context.WithTimeout(ctx, lockTimeout)
		lk, err := s.Lock(lctx, faultGroup, locksmith.Holder{ID: id, Note: "faults tier"})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.fail(err)
			time.Sleep(time.Duration(50+rng.IntN(100)) * time.Millisecond)
			continue
		}
		g := grant{id: id, index: lk.Slot.Index, token: lk.Token(), started: start, at: time.Now()}
		c.acquired(g)
		time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond) // the "reboot"
		c.releasing()
		for retried := false; ; retried = true {
			rctx, cancel := context.WithTimeout(ctx, lockTimeout)
			err := s.Release(rctx, lk)
			cancel()
			if err == nil || errors.Is(err, locksmith.ErrLost) {
				c.released(g, err != nil, retried)
				break
			}
			if ctx.Err() != nil {
				return
			}
			c.fail(err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// replayed is what a replay of the group's history found.
type replayed struct {
	revisions  int64
	peak       map[string]int // phase -> most holders at one revision
	violations []string
	creates    map[string]int64 // "key@createRev" -> 1
	deletes    map[string]bool  // "key@createRev" deleted
}

// replay watches the group's keys from revision 1 up to the sentinel key and checks, at every
// revision, holders <= max and no holder in two slots. phaseAt names the phase of a revision.
func replay(t *testing.T, cli *clientv3.Client, prefix, sentinel string, phaseAt func(rev int64) string) replayed {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	r := replayed{peak: map[string]int{}, creates: map[string]int64{}, deletes: map[string]bool{}}
	slotsPrefix, cfgKey := prefix+"slots/", prefix+"config"
	slots := map[string]int64{}   // key -> create revision
	holder := map[string]string{} // key -> holder id
	maxHolders := 1
	check := func(rev int64) {
		r.revisions++
		ids := map[string]bool{}
		for k := range slots {
			if ids[holder[k]] {
				r.violations = append(r.violations, fmt.Sprintf("revision %d: %s holds two slots", rev, holder[k]))
			}
			ids[holder[k]] = true
		}
		p := phaseAt(rev)
		r.peak[p] = max(r.peak[p], len(slots))
		if len(slots) > maxHolders {
			r.violations = append(r.violations, fmt.Sprintf("revision %d: %d holders, max %d", rev, len(slots), maxHolders))
		}
	}
	w := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	var last int64
	for resp := range w {
		if err := resp.Err(); err != nil {
			t.Fatalf("replay watch: %v", err)
		}
		for _, ev := range resp.Events {
			rev, k := ev.Kv.ModRevision, string(ev.Kv.Key)
			if last != 0 && rev != last {
				check(last)
			}
			last = rev
			switch {
			case k == sentinel:
				check(rev)
				return r
			case k == cfgKey && ev.Type == clientv3.EventTypePut:
				var cfg locksmith.GroupConfig
				if err := json.Unmarshal(ev.Kv.Value, &cfg); err == nil {
					maxHolders = cfg.Max
				}
			case strings.HasPrefix(k, slotsPrefix) && ev.Type == clientv3.EventTypePut:
				var h locksmith.Holder
				json.Unmarshal(ev.Kv.Value, &h)
				if ev.IsCreate() {
					r.creates[k+"@"+strconv.FormatInt(ev.Kv.CreateRevision, 10)] = rev
				}
				slots[k], holder[k] = ev.Kv.CreateRevision, h.ID
			case strings.HasPrefix(k, slotsPrefix) && ev.Type == clientv3.EventTypeDelete:
				r.deletes[k+"@"+strconv.FormatInt(slots[k], 10)] = true
				delete(slots, k)
				delete(holder, k)
			}
		}
	}
	t.Fatal("replay: the watch ended before the sentinel")
	return r
}

// TestEtcdFaults runs machines contending for max=2 slots on a real 3-member etcd cluster while
// the leader is killed, quorum is lost and a member is stopped, and checks the semaphore from
// outside.
func TestEtcdFaults(t *testing.T) {
	needFaults(t)
	bin := needTool(t, "etcd", "etcd-server")
	dir := t.TempDir()
	cl := startCluster(t, bin, dir, 3)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	admin := locksmith.NewStore(newClient(t, cl.endpoints()...), "", nil)
	if _, err := admin.SetMax(ctx, faultGroup, faultMax); err != nil {
		t.Fatal(err)
	}
	prefix := admin.GroupKeyPrefix(faultGroup)

	// Pool "all": 20 machines on 4 clients that know every member. Pool "m2": 6 machines on
	// one client that knows only m2, the member that is stopped in the partition phase and
	// kept alive in the quorum phase (it then answers without a leader).
	c := newContention()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	onlyM2 := func(id string) bool { return strings.HasPrefix(id, "m2-") }
	allStores := make([]*locksmith.Store, 4)
	for i := range allStores {
		allStores[i] = locksmith.NewStore(newClient(t, cl.endpoints()...), "", nil)
	}
	m2Store := locksmith.NewStore(newClient(t, cl.members[2].client), "", nil)
	for i := range 20 {
		wg.Add(1)
		go machine(ctx, allStores[i%4], fmt.Sprintf("all-%02d", i), c, stop, wg.Done)
	}
	for i := range 6 {
		wg.Add(1)
		go machine(ctx, m2Store, fmt.Sprintf("m2-%02d", i), c, stop, wg.Done)
	}
	// A poller reads the group every 25 ms.
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		poll := locksmith.NewStore(newClient(t, cl.endpoints()...), "", nil)
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			st, err := poll.State(pctx, faultGroup)
			pcancel()
			if err == nil {
				c.sawHolders(len(st.Slots))
			}
		}
	}()

	// Phases, each starting at an etcd revision (for the replay) and a time.
	type phase struct {
		name string
		rev  int64
	}
	var phases []phase
	revCli := newClient(t, cl.endpoints()...)
	begin := func(name string) {
		var rev int64
		for range 100 {
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := revCli.Get(rctx, "rev")
			rcancel()
			if err == nil {
				rev = resp.Header.Revision
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		phases = append(phases, phase{name, rev})
		c.setPhase(name)
		t.Logf("%s: phase %q from revision %d", time.Now().Format("15:04:05.000"), name, rev)
	}
	type faultResult struct {
		name, recovery, notes string
	}
	var results []faultResult

	begin("baseline")
	time.Sleep(3 * time.Second)

	// 1. The leader killed with SIGKILL, restarted 4 s later.
	// The m2 pool stays reachable here: if m2 leads, leadership moves to m0 first, so the
	// recovery measured is the cluster's, not the wait for m2's restart.
	lead := cl.leader(t)
	if lead == cl.members[2] {
		cl.moveLeader(t, lead, cl.members[0])
		lead = cl.leader(t)
	}
	begin("leader killed")
	killed := time.Now()
	lead.p.kill(t)
	time.Sleep(4 * time.Second)
	killRev := phases[len(phases)-1].rev
	lead.p.start(t)
	cl.waitHealthy(t, lead)
	time.Sleep(2 * time.Second)
	recoveries := []func() string{func() string {
		return "first lock " + ms(c.firstLockAfter(killed, killRev, nil)) + " after the kill (restart after 4s)"
	}}
	results = append(results, faultResult{"leader killed", "", fmt.Sprintf("killed %s (SIGKILL), restarted after 4s", lead.name)})

	// 2. Quorum lost: the two members other than m2 killed for 6 s; m2 answers without a leader.
	begin("quorum lost")
	m0, m1, m2 := cl.members[0], cl.members[1], cl.members[2]
	m0.p.kill(t)
	m1.p.kill(t)
	// m2 knows it has no leader once an election timeout passed without heartbeats; before that
	// a read waits for the leader it still believes in (and then times out).
	noLeaderSince := time.Now()
	m2cli := newClient(t, m2.client)
	for time.Since(noLeaderSince) < 30*time.Second {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		st, err := m2cli.Status(sctx, m2.client)
		scancel()
		if err == nil && st.Leader == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	noLeaderAfter := time.Since(noLeaderSince)
	t.Logf("m2 reports no leader %s after the kill", ms(noLeaderAfter))
	var ctlOut, ctlErr bytes.Buffer
	ctlStart := time.Now()
	code := locksmithctl.Run(ctx, []string{"status", "-endpoint", m2.client, "-group", faultGroup}, nil, cli.IO{Stdin: strings.NewReader(""), Stdout: &ctlOut, Stderr: &ctlErr})
	ctlTook := time.Since(ctlStart)
	if code == 0 || !strings.Contains(ctlErr.String(), "etcd has no leader (quorum lost?)") || !strings.Contains(ctlErr.String(), `group "faults"`) ||
		strings.Contains(ctlErr.String(), "TLS") || strings.Contains(ctlErr.String(), "password") {
		t.Errorf("locksmithctl status against a member without a leader: exit %d\n%s%s", code, ctlOut.String(), ctlErr.String())
	}
	t.Logf("locksmithctl status during quorum loss (%s): %s", ms(ctlTook), strings.TrimSpace(ctlErr.String()))
	time.Sleep(6*time.Second - time.Since(noLeaderSince))
	healed := time.Now()
	m0.p.start(t)
	m1.p.start(t)
	cl.waitHealthy(t, m0)
	cl.waitHealthy(t, m1)
	time.Sleep(3 * time.Second)
	quorumBack := healed
	recoveries = append(recoveries, func() string {
		return "first lock " + ms(c.firstLockAfter(quorumBack, 0, nil)) + " after the restart of m0, m1" // nothing commits without quorum
	})
	results = append(results, faultResult{"quorum lost", "",
		fmt.Sprintf("m0, m1 killed for 6s; m2 knew it had no leader after %s, then locksmithctl status on m2 failed in %s with \"no leader (quorum lost?)\"", ms(noLeaderAfter), ms(ctlTook))})

	// 3. A partition: m2 stopped with SIGSTOP for 6 s while the m2 pool talks only to it.
	wasLeader := cl.leader(t) == m2
	begin("member stopped")
	m2.p.signal(t, syscall.SIGSTOP)
	time.Sleep(6 * time.Second)
	healed = time.Now()
	m2.p.signal(t, syscall.SIGCONT)
	time.Sleep(4 * time.Second)
	continued := healed
	recoveries = append(recoveries, func() string {
		return "m2 pool's first lock " + ms(c.firstLockAfter(continued, 0, onlyM2)) + " after SIGCONT" // it reaches nobody else
	})
	results = append(results, faultResult{"member stopped", "",
		fmt.Sprintf("m2 SIGSTOP for 6s (leader: %v) with 6 machines bound to it", wasLeader)})

	begin("drain")
	close(stop)
	wg.Wait()
	<-pollDone

	// The end of the history, then the replay.
	sentinel := prefix + "zz-faults-end"
	if _, err := revCli.Put(ctx, sentinel, "end"); err != nil {
		t.Fatal(err)
	}
	phaseAt := func(rev int64) string {
		name := "setup"
		for _, p := range phases {
			if rev > p.rev {
				name = p.name
			}
		}
		return name
	}
	r := replay(t, revCli, prefix, sentinel, phaseAt)
	final, err := admin.State(ctx, faultGroup)
	if err != nil {
		t.Fatal(err)
	}

	for i := range results {
		results[i].recovery = recoveries[i]()
	}

	// Invariants.
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range r.violations {
		t.Error(v)
	}
	missingGrants, missingReleases, doubles := 0, 0, 0
	byToken := map[int64]string{}
	for _, g := range c.grants {
		key := fmt.Sprintf("%sslots/%04d@%d", prefix, g.index, g.token)
		if _, ok := r.creates[key]; !ok {
			missingGrants++
			t.Errorf("acknowledged grant %s (slot %d, token %d) is not in the history", g.id, g.index, g.token)
		}
		if other, ok := byToken[g.token]; ok && other != g.id {
			doubles++
			t.Errorf("token %d granted to %s and %s", g.token, other, g.id)
		}
		byToken[g.token] = g.id
	}
	for _, g := range c.releases {
		if !r.deletes[fmt.Sprintf("%sslots/%04d@%d", prefix, g.index, g.token)] {
			missingReleases++
			t.Errorf("acknowledged release %s (slot %d, token %d) is not in the history", g.id, g.index, g.token)
		}
	}
	if c.lostSlot > 0 {
		t.Errorf("%d releases found their slot broken: nobody may break a slot in this run", c.lostSlot)
	}
	if len(final.Slots) != 0 {
		t.Errorf("%d slots left after every machine released: %+v", len(final.Slots), final.Slots)
	}
	if len(c.bare) > 0 {
		t.Errorf("errors that do not name the group and the cause: %q", c.bare)
	}
	if c.errs["quorum lost"]["no-leader"] == 0 {
		t.Errorf("no client saw \"no leader\" during quorum loss: %v", c.errs["quorum lost"])
	}
	if len(c.grants) < 50 {
		t.Errorf("only %d grants: the contention is too weak to mean anything", len(c.grants))
	}
	ok := func(bad int) string {
		if bad == 0 {
			return "ok"
		}
		return fmt.Sprintf("FAILED (%d)", bad)
	}
	inv := fmt.Sprintf("holders<=%d at all %d revisions: %s; no double grant: %s; acked grants in history: %s; acked releases in history: %s; none left: %s; errors name group+cause: %s",
		faultMax, r.revisions, ok(len(r.violations)), ok(doubles), ok(missingGrants), ok(missingReleases), ok(len(final.Slots)+c.lostSlot), ok(len(c.bare)))
	t.Logf("%d grants, %d releases (%d acknowledged only on a retry) over %d revisions", len(c.grants), len(c.releases), c.ambiguous, r.revisions)
	for _, k := range slices.Sorted(maps.Keys(c.samples)) {
		t.Logf("first %s error: %s", k, c.samples[k])
	}
	for _, fr := range results {
		report(t, row{
			Fault:      "etcd: " + fr.name,
			Invariants: inv,
			MaxHolders: fmt.Sprintf("replay %d, polled %d, clients %d", r.peak[fr.name], c.polled[fr.name], c.peak[fr.name]),
			Lost:       fmt.Sprintf("grants %d of %d, releases %d of %d (whole run; %d releases answered only on a retry, all in the history)", missingGrants, len(c.grants), missingReleases, len(c.releases), c.ambiguous),
			Recovery:   fr.recovery,
			Notes:      fr.notes + "; client errors " + causes(c.errs[fr.name]),
		})
	}
}

// causes formats error counts by cause, largest first.
func causes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(slices.Clip(parts), ", ")
}
