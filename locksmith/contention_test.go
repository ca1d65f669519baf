package locksmith_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

// revisionChecker replays every event of a group from revision 1 and checks, at every revision,
// that the holder count never rises above max: a revision that adds holders must leave at most
// max, and a lowered max only ever sees the count fall until it is under.
type revisionChecker struct {
	cfgKey, slots string
	max           int
	holders       map[string]bool
	lastRev       int64
	admitted      int // slot creations seen
	overMax       int // revisions where a lowered max left more holders than max
	peak          int
	violations    []string
}

func (c *revisionChecker) apply(rev int64, evs []*clientv3.Event) {
	before := len(c.holders)
	for _, ev := range evs {
		k := string(ev.Kv.Key)
		switch {
		case k == c.cfgKey && ev.Type == clientv3.EventTypePut:
			var cfg locksmith.GroupConfig
			if err := json.Unmarshal(ev.Kv.Value, &cfg); err != nil {
				c.violations = append(c.violations, fmt.Sprintf("rev %d: bad config: %v", rev, err))
			}
			c.max = cfg.Max
		case strings.HasPrefix(k, c.slots) && ev.Type == clientv3.EventTypePut:
			if ev.IsCreate() {
				c.admitted++
			}
			c.holders[k] = true
		case strings.HasPrefix(k, c.slots) && ev.Type == clientv3.EventTypeDelete:
			delete(c.holders, k)
		}
	}
	n := len(c.holders)
	c.peak = max(c.peak, n)
	if n > before && n > c.max {
		c.violations = append(c.violations, fmt.Sprintf("rev %d: %d holders admitted over max %d", rev, n, c.max))
	}
	if n > c.max {
		c.overMax++
	}
	c.lastRev = rev
}

// watch consumes the group's history from revision 1 until it has seen revision until.
func (c *revisionChecker) watch(ctx context.Context, cli *clientv3.Client, prefix string, until <-chan int64) error {
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	target := int64(-1)
	for {
		if target >= 0 && c.lastRev >= target {
			return nil
		}
		select {
		case target = <-until:
			until = nil
		case resp, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch closed at revision %d: %v", c.lastRev, ctx.Err())
			}
			if err := resp.Err(); err != nil {
				return err
			}
			// Group the events by revision: one transaction is one revision.
			for i := 0; i < len(resp.Events); {
				j, rev := i, resp.Events[i].Kv.ModRevision
				for j < len(resp.Events) && resp.Events[j].Kv.ModRevision == rev {
					j++
				}
				c.apply(rev, resp.Events[i:j])
				i = j
			}
			if resp.Header.Revision > c.lastRev && len(resp.Events) == 0 {
				c.lastRev = resp.Header.Revision
			}
		}
	}
}

// 100 clients contend for a group whose max an operator keeps changing between 1 and 5, some
// holders never release and are expired by their lease, and a watcher checks every revision.
func TestContention(t *testing.T) {
	if testing.Short() {
		t.Skip("contention test: skipped in -short mode")
	}
	const (
		clients     = 100
		rounds      = 2
		abandoners  = 4 // clients whose first slot is left for etcd to expire
		connections = 10
	)
	e := etcdtest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	admin := locksmith.NewStore(e.Client, "", nil)
	const group = "contended"
	if _, _, err := admin.SetConfig(ctx, group, func(c locksmith.GroupConfig) locksmith.GroupConfig {
		c.Max, c.LeaseTTLSeconds, c.Stale = 3, 1, locksmith.StaleExpire
		return c
	}); err != nil {
		t.Fatal(err)
	}

	chk := &revisionChecker{
		cfgKey:  admin.GroupKeyPrefix(group) + "config",
		slots:   admin.GroupKeyPrefix(group) + "slots/",
		holders: map[string]bool{},
	}
	until := make(chan int64, 1)
	watchErr := make(chan error, 1)
	go func() { watchErr <- chk.watch(ctx, e.NewClient(t), admin.GroupKeyPrefix(group), until) }()

	stores := make([]*locksmith.Store, connections)
	for i := range stores {
		stores[i] = locksmith.NewStore(e.NewClient(t), "", nil)
	}
	var acquired, expired atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%connections]
			id := fmt.Sprintf("node-%03d", i)
			for r := range rounds {
				lk, err := s.Lock(ctx, group, locksmith.Holder{ID: id, BootID: fmt.Sprint("boot-", r)})
				if err != nil {
					errs <- fmt.Errorf("%s round %d: %w", id, r, err)
					return
				}
				acquired.Add(1)
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				if i < abandoners && r == 0 {
					// Die holding the slot: the lease expires it. Next round is a fresh tenure.
					if err := waitGone(ctx, s, lk); err != nil {
						errs <- err
						return
					}
					continue
				}
				if err := s.Release(ctx, lk); errors.Is(err, locksmith.ErrLost) {
					// A 1 s lease can expire before the release on a loaded machine (its
					// keepalive starved): the slot is gone either way, which the watcher checks.
					expired.Add(1)
				} else if err != nil {
					errs <- fmt.Errorf("%s release: %w", id, err)
					return
				}
			}
		}()
	}
	done, workersDone := make(chan struct{}), make(chan struct{})
	var maxChanges int
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			select {
			case <-workersDone:
				return
			default:
			}
			if _, err := admin.SetMax(ctx, group, 1+rand.IntN(5)); err == nil {
				maxChanges++
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	wg.Wait()
	close(workersDone)
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	resp, err := e.Client.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	until <- resp.Header.Revision
	if err := <-watchErr; err != nil {
		t.Fatal(err)
	}
	for _, v := range chk.violations {
		t.Error(v)
	}
	if chk.admitted != clients*rounds {
		t.Errorf("watcher saw %d slot creations, want %d", chk.admitted, clients*rounds)
	}
	if maxChanges == 0 || chk.peak < 2 {
		t.Errorf("contention too weak to mean anything: %d max changes, peak %d holders", maxChanges, chk.peak)
	}
	t.Logf("%d acquisitions, %d set-max changes, %d revisions checked, peak %d holders, %d revisions over a lowered max, %d leases expired before their release",
		chk.admitted, maxChanges, chk.lastRev, chk.peak, chk.overMax, expired.Load())
}

// waitGone waits until etcd expired lk's slot.
func waitGone(ctx context.Context, s *locksmith.Store, lk locksmith.Lock) error {
	for {
		_, err := s.Update(ctx, lk, func(*locksmith.Holder) {})
		if errors.Is(err, locksmith.ErrLost) {
			return nil // expired
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
