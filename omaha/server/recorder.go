package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

// checkins writes the check-ins and events it is given in batches (group commit): one
// transaction per batch, started when the previous one finished and either interval passed
// or maxRows rows are waiting — or at once when a request waits for its rows (a grant, or a
// state-changing event made durable with wait). When queueRows rows are waiting, put blocks
// (back-pressure) until the writer catches up or the caller's context ends. A failed write is
// retried with the rows kept; newer rows for the same instance win.
//
// Durability: a routine check-in (a ping, or an update check whose only event is the plain
// 3/2 without a previous version) is answered before its row is written; a crash loses at
// most the rows queued but not committed, in practice the last interval of traffic (bounded by
// queueRows), and the host's next check-in (every 45 min) writes the same facts again. A
// request carrying any other event, the post-update 3/2 naming the previous version included,
// waits (wait) until its rows and everything queued before them are committed, so an
// acknowledged download, install, success, failure or rollback report survives a crash.
// Grants are decided in a transaction before the answer.
//
// The writer is the only writer of instance rows, so it also keeps the rows it wrote (cache,
// bounded by cacheRows): lookup answers from the queue, the rows being written, or the cache,
// and only on a miss does the caller read the database. When every stored instance fitted in
// the cache at start (preload) and none was evicted since, a miss means a new instance and
// needs no read at all. This assumes this process is the only server writing the database's
// instances (one omahad, or replicas with requests of a machine routed to one replica);
// otherwise set Config.InstanceCache < 0.
//
// Grants go through the same writer: a grant request wakes the writer, which writes the queued
// rows first and then decides the grants in order in the same transaction, so a grant counts
// every check-in received before it (a host's 3/1 still in the queue keeps its slot), and a
// release that makes thousands of hosts eligible at once costs a few transactions, not one each.
type checkins struct {
	db        batchWriter
	log       *slog.Logger
	m         *metrics
	interval  time.Duration
	maxRows   int
	queueRows int
	cacheRows int // 0 = no cache
	// onHalt is told about the groups a batch's failure events halted (after the commit).
	onHalt func(ctx context.Context, halted []store.Group)

	flushMu sync.Mutex // one flush at a time

	mu        sync.Mutex
	seq       uint64 // sequence number of the newest put
	committed uint64 // every put up to this one is committed
	pending   map[instKey]queued
	events    []queuedEvent
	grants    []*grantReq
	waiters   []waiter           // durable puts waiting for a commit, by seq
	flushing  map[instKey]queued // being written now
	spare     map[instKey]queued // the empty map flushing takes next (reused, not reallocated)
	written   map[instKey]store.Instance
	complete  bool          // written holds every stored instance
	wake      chan struct{} // a row arrived (buffered 1)
	space     *sync.Cond    // the queue shrank
	done      chan struct{} // run returned
}

// batchWriter is what the writer needs of the store.
type batchWriter interface {
	WriteCheckins(ctx context.Context, b store.Batch) (store.BatchResult, error)
}

type instKey struct{ app, machine string }

// queued is an instance row waiting to be written. routine means it differs from the stored
// row only in the columns of a routine check-in (store.Batch.Routine). since is the sequence
// number of the oldest put whose changes it carries that is not committed yet.
type queued struct {
	in      store.Instance
	routine bool
	since   uint64
}

type queuedEvent struct {
	ev  store.Event
	seq uint64
}

type waiter struct {
	seq  uint64
	done chan struct{}
}

// grantReq is a grant candidate waiting for its batch.
type grantReq struct {
	in   store.Instance
	done chan struct{}
	res  store.GrantResult
	err  error
}

func keyOf(in *store.Instance) instKey { return instKey{in.AppID, in.MachineID} }

func newCheckins(db batchWriter, log *slog.Logger, m *metrics, interval time.Duration, maxRows, queueRows, cacheRows int) *checkins {
	c := &checkins{
		db: db, log: log, m: m, interval: interval, maxRows: maxRows, queueRows: queueRows, cacheRows: max(cacheRows, 0),
		pending: map[instKey]queued{}, written: map[instKey]store.Instance{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	c.space = sync.NewCond(&c.mu)
	return c
}

// instanceLister is what preload needs of the store.
type instanceLister interface {
	EachInstance(ctx context.Context, max int, fn func(store.Instance)) (complete bool, err error)
}

// preload fills the cache with the stored instances, up to cacheRows, and records whether
// that was all of them.
func (c *checkins) preload(ctx context.Context, db instanceLister) error {
	if c.cacheRows == 0 {
		return nil
	}
	m := map[instKey]store.Instance{}
	complete, err := db.EachInstance(ctx, c.cacheRows, func(in store.Instance) { m[keyOf(&in)] = in })
	if err != nil {
		return fmt.Errorf("server: load instances into the cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.written, c.complete = m, complete
	return nil
}

// lookup returns the newest row of an instance this process knows: queued, being written or
// cached (known). When it knows none, absent says whether the instance is surely not stored
// (the cache holds every stored instance); otherwise the caller reads the database.
func (c *checkins) lookup(k instKey) (in store.Instance, known, absent bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q, ok := c.pending[k]; ok {
		return q.in, true, false
	}
	if q, ok := c.flushing[k]; ok {
		return q.in, true, false
	}
	if in, ok := c.written[k]; ok {
		return in, true, false
	}
	return store.Instance{}, false, c.complete
}

// get is lookup without the absence answer.
func (c *checkins) get(k instKey) (store.Instance, bool) {
	in, known, _ := c.lookup(k)
	return in, known
}

// remember caches a row read from the database (the caller serialises requests of its
// machine, so no newer row of it can be queued meanwhile).
func (c *checkins) remember(in store.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cache(keyOf(&in), in)
}

// cache keeps a written row, evicting arbitrary rows when full (c.mu held).
func (c *checkins) cache(k instKey, in store.Instance) {
	if c.cacheRows == 0 {
		return
	}
	if _, ok := c.written[k]; !ok && len(c.written) >= c.cacheRows {
		n := max(c.cacheRows/100, 1)
		for k := range c.written {
			delete(c.written, k)
			if n--; n == 0 {
				break
			}
		}
		c.complete = false
	}
	c.written[k] = in
}

func (c *checkins) queued() int { return len(c.pending) + len(c.events) }

// put queues an instance row and its events and returns the put's sequence number (for wait).
// routine says in differs from the row before it (queued or stored) only in the columns of a
// routine check-in.
func (c *checkins) put(ctx context.Context, in store.Instance, routine bool, evs []store.Event) (uint64, error) {
	c.mu.Lock()
	if c.queued() >= c.queueRows {
		stop := context.AfterFunc(ctx, func() {
			c.mu.Lock()
			c.space.Broadcast()
			c.mu.Unlock()
		})
		for c.queued() >= c.queueRows && ctx.Err() == nil {
			c.space.Wait()
		}
		stop()
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return 0, fmt.Errorf("server: check-in queue full (%d rows): %w", c.queueRows, err)
		}
	}
	c.seq++
	seq := c.seq
	k := keyOf(&in)
	q := queued{in, routine, seq}
	if prev, ok := c.pending[k]; ok {
		q.since = prev.since // the queued row's changes are not written yet
		if !prev.routine {
			q.routine = false
		}
	}
	c.pending[k] = q
	for _, ev := range evs {
		c.events = append(c.events, queuedEvent{ev, seq})
	}
	n := c.queued()
	c.mu.Unlock()
	c.m.queue.Set(float64(n))
	c.poke()
	return seq, nil
}

func (c *checkins) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// wait returns when the put numbered seq, and every put before it, is committed, or when ctx
// ends. It makes the writer flush without waiting for the interval.
func (c *checkins) wait(ctx context.Context, seq uint64) error {
	c.mu.Lock()
	if c.committed >= seq {
		c.mu.Unlock()
		return nil
	}
	w := waiter{seq, make(chan struct{})}
	c.waiters = append(c.waiters, w) // puts are numbered under c.mu, so waiters stay sorted
	c.mu.Unlock()
	c.poke()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		if i := slices.IndexFunc(c.waiters, func(x waiter) bool { return x.done == w.done }); i >= 0 {
			c.waiters = slices.Delete(c.waiters, i, i+1)
		}
		c.mu.Unlock()
		return fmt.Errorf("server: waiting for the check-in to be written: %w", ctx.Err())
	}
}

// release advances committed to the newest put with nothing left in the queue, and wakes its
// waiters (c.mu held; the rows being written are not in the queue, so call it after a commit).
func (c *checkins) release() {
	if len(c.waiters) == 0 {
		return
	}
	low := c.seq
	for _, q := range c.pending {
		low = min(low, q.since-1)
	}
	if len(c.events) > 0 {
		low = min(low, c.events[0].seq-1)
	}
	c.committed = max(c.committed, low)
	i := 0
	for ; i < len(c.waiters) && c.waiters[i].seq <= c.committed; i++ {
		close(c.waiters[i].done)
	}
	c.waiters = c.waiters[i:]
}

// grant asks the writer to decide a grant for in (already marked granted) and waits for the
// decision.
func (c *checkins) grant(ctx context.Context, in store.Instance) (store.GrantResult, error) {
	r := &grantReq{in: in, done: make(chan struct{})}
	c.mu.Lock()
	c.grants = append(c.grants, r)
	c.mu.Unlock()
	c.poke()
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		// The writer may still decide it; the instance row then says granted, which a later
		// check-in either confirms or overwrites with the state it computes.
		return store.GrantResult{}, ctx.Err()
	}
}

// run writes batches until ctx ends, then writes what is left (with flushCtx) and returns.
func (c *checkins) run(ctx, flushCtx context.Context) {
	defer close(c.done)
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			for c.flush(flushCtx) > 0 && flushCtx.Err() == nil {
			}
			return
		case <-c.wake:
		}
		// Let a batch build up for the rest of the interval, unless it is already big or a
		// request waits for it.
		for wait := c.interval - time.Since(last); wait > 0 && !c.urgent() && ctx.Err() == nil; wait = c.interval - time.Since(last) {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-c.wake: // a waiter or a grant may have arrived: look again
			}
			t.Stop()
		}
		last = time.Now()
		if c.flush(ctx) > 0 {
			// Rows remain (more than maxRows, or a failed write): go round again.
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
}

// urgent reports whether the next batch should start now: a request waits for it, or it is full.
func (c *checkins) urgent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.grants) > 0 || len(c.waiters) > 0 || c.queued() >= c.maxRows
}

func (c *checkins) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued() + len(c.grants)
}

// drain writes everything queued, including a batch being written right now, and returns
// when all of it is committed or ctx ends.
func (c *checkins) drain(ctx context.Context) error {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	for c.size() > 0 {
		if _, err := c.flushLocked(ctx); err != nil && ctx.Err() != nil {
			return fmt.Errorf("server: write queued check-ins: %w", err)
		}
	}
	return nil
}

// flush writes up to maxRows rows in one transaction and returns how many rows are left.
func (c *checkins) flush(ctx context.Context) int {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	left, _ := c.flushLocked(ctx)
	return left
}

func (c *checkins) flushLocked(ctx context.Context) (int, error) {
	c.mu.Lock()
	var b store.Batch
	if c.spare == nil {
		c.spare = map[instKey]queued{}
	}
	c.flushing, c.spare = c.spare, nil
	for k, q := range c.pending {
		if len(c.flushing) >= c.maxRows {
			break
		}
		if q.routine {
			b.Routine = append(b.Routine, q.in)
		} else {
			b.Instances = append(b.Instances, q.in)
		}
		c.flushing[k] = q
		delete(c.pending, k)
	}
	nrows := len(c.flushing)
	nev := min(len(c.events), max(c.maxRows-nrows, c.maxRows/4))
	taken := c.events[:nev:nev]
	c.events = c.events[nev:]
	reqs := c.grants
	c.grants = nil
	if nrows == 0 && nev == 0 && len(reqs) == 0 {
		c.flushing, c.spare = nil, c.flushing
		c.release()
		c.mu.Unlock()
		return 0, nil
	}
	c.mu.Unlock()
	b.Events = make([]store.Event, nev)
	for i, e := range taken {
		b.Events[i] = e.ev
	}
	for _, r := range reqs {
		b.Grants = append(b.Grants, r.in)
	}

	start := time.Now()
	res, err := c.db.WriteCheckins(ctx, b)
	c.m.observeDB("write_checkins", start)
	for i, r := range reqs {
		if err != nil {
			r.err = err // grants are not retried: the request fails and the host asks again later
		} else {
			r.res = res.Grants[i]
		}
		close(r.done)
	}

	c.mu.Lock()
	if err != nil {
		// Keep the rows: put them back unless a newer row for the same instance arrived.
		for k, q := range c.flushing {
			if newer, ok := c.pending[k]; !ok {
				c.pending[k] = q
			} else {
				if !q.routine {
					newer.routine = false // the failed row's other changes still need writing
				}
				newer.since = min(newer.since, q.since)
				c.pending[k] = newer
			}
		}
		c.events = append(taken, c.events...)
	} else {
		for k, q := range c.flushing {
			c.cache(k, q.in)
		}
	}
	clear(c.flushing)
	c.flushing, c.spare = nil, c.flushing
	c.release()
	left := c.queued()
	c.space.Broadcast()
	c.mu.Unlock()

	c.m.queue.Set(float64(left))
	if err != nil {
		c.m.flushErrors.Inc()
		if ctx.Err() == nil {
			c.log.Error("write check-ins; keeping them to retry", "rows", nrows+len(b.Events), "err", err)
			t := time.NewTimer(min(c.interval*10, time.Second)) // do not spin on a failing database
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		return left, err
	}
	c.m.batchRows.Observe(float64(nrows + len(b.Events) + len(reqs)))
	if len(res.Halted) > 0 && c.onHalt != nil {
		c.onHalt(ctx, res.Halted)
	}
	return left, nil
}
