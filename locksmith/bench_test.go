package locksmith_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
)

// BenchmarkHandoff measures how long a freed slot takes to reach the next waiter: from the
// holder calling Release to the waiter's Lock returning (the waiter learns of the release by its
// etcd watch, re-reads and wins the transaction). Max is 1, so hand-offs are strictly one after
// another; each iteration is 200 hand-offs among the waiters.
func BenchmarkHandoff(b *testing.B) {
	for _, waiters := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			e := etcdtest.New(b)
			stores := make([]*locksmith.Store, 4)
			for i := range stores {
				stores[i] = locksmith.NewStore(e.NewClient(b), "", nil)
			}
			const perIter = 200
			var lat []time.Duration
			for b.Loop() {
				lat = append(lat, handoffs(b, stores, waiters+1, perIter)...)
			}
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(len(lat)), "handoffs")
		})
	}
}

// handoffs runs clients that take the only slot in turn until n hand-offs happened. A client
// that released waits until another one took the slot before it queues again, so every
// hand-off goes to a client that was already waiting.
func handoffs(b *testing.B, stores []*locksmith.Store, clients, n int) []time.Duration {
	ctx := b.Context()
	group := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	var (
		mu       sync.Mutex
		taken    = sync.NewCond(&mu)
		gen      int // acquisitions so far
		lat      []time.Duration
		released time.Time // when the last Release was called
		done     bool
		wg       sync.WaitGroup
	)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%len(stores)]
			h := locksmith.Holder{ID: fmt.Sprint("node-", i)}
			for {
				lk, err := s.Lock(ctx, group, h)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				if !released.IsZero() {
					lat = append(lat, time.Since(released))
				}
				gen++
				mine := gen
				done = done || len(lat) >= n
				stop := done
				released = time.Now()
				taken.Broadcast()
				mu.Unlock()
				if err := s.Release(ctx, lk); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				for gen == mine && !done {
					taken.Wait()
				}
				stop = stop || done
				mu.Unlock()
				if stop {
					return
				}
			}
		}()
	}
	wg.Wait()
	return lat
}
