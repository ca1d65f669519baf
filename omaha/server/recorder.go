package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

// checkins writes the check-ins and events it is given in batches (group commit): one
// transaction per batch, started when the previous one finished and either interval passed
// or maxRows rows are waiting. Callers do not wait for the write; a crash loses at most what
// was queued but not yet committed (bounded by the queue, in practice one interval of traffic).
// When queueRows rows are waiting, Put blocks (back-pressure) until the writer catches up or
// the caller's context ends. A failed write is retried with the rows kept; newer rows for the
// same instance win.
//
// Reads of an instance go through get first, so a request sees the check-ins of earlier
// requests that are not written yet.
//
// Grants go through the same writer: a grant request waits for the next batch, which writes the
// queued rows first and then decides the grants in order in the same transaction, so a grant
// counts every check-in received before it (a host's 3/1 still in the queue keeps its slot), and
// a release that makes thousands of hosts eligible at once costs a few transactions, not one each.
type checkins struct {
	db        batchWriter
	log       *slog.Logger
	m         *metrics
	interval  time.Duration
	maxRows   int
	queueRows int
	// onHalt is told about the groups a batch's failure events halted (after the commit).
	onHalt func(ctx context.Context, halted []store.Group)

	flushMu sync.Mutex // one flush at a time

	mu       sync.Mutex
	pending  map[instKey]queued
	events   []store.Event
	grants   []*grantReq
	flushing map[instKey]queued // being written now
	wake     chan struct{}      // a row arrived (buffered 1)
	space    *sync.Cond         // the queue shrank
	done     chan struct{}      // run returned
}

// batchWriter is what the writer needs of the store.
type batchWriter interface {
	WriteCheckins(ctx context.Context, b store.Batch) (store.BatchResult, error)
}

type instKey struct{ app, machine string }

// queued is an instance row waiting to be written. routine means it differs from the stored
// row only in the columns of a routine check-in (store.Batch.Routine).
type queued struct {
	in      store.Instance
	routine bool
}

// grantReq is a grant candidate waiting for its batch.
type grantReq struct {
	in   store.Instance
	done chan struct{}
	res  store.GrantResult
	err  error
}

func keyOf(in *store.Instance) instKey { return instKey{in.AppID, in.MachineID} }

func newCheckins(db batchWriter, log *slog.Logger, m *metrics, interval time.Duration, maxRows, queueRows int) *checkins {
	c := &checkins{
		db: db, log: log, m: m, interval: interval, maxRows: maxRows, queueRows: queueRows,
		pending: map[instKey]queued{}, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	c.space = sync.NewCond(&c.mu)
	return c
}

// get returns the newest not-yet-written row of an instance.
func (c *checkins) get(k instKey) (store.Instance, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if q, ok := c.pending[k]; ok {
		return q.in, true
	}
	q, ok := c.flushing[k]
	return q.in, ok
}

func (c *checkins) queued() int { return len(c.pending) + len(c.events) }

// put queues an instance row and its events. routine says in differs from the row before it
// (queued or stored) only in the columns of a routine check-in.
func (c *checkins) put(ctx context.Context, in store.Instance, routine bool, evs []store.Event) error {
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
			return fmt.Errorf("server: check-in queue full (%d rows): %w", c.queueRows, err)
		}
	}
	k := keyOf(&in)
	if prev, ok := c.pending[k]; ok && !prev.routine {
		routine = false // the queued row's other changes are not written yet
	}
	c.pending[k] = queued{in, routine}
	c.events = append(c.events, evs...)
	n := c.queued()
	c.mu.Unlock()
	c.m.queue.Set(float64(n))
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// grant asks the writer to decide a grant for in (already marked granted) and waits for the
// decision.
func (c *checkins) grant(ctx context.Context, in store.Instance) (store.GrantResult, error) {
	r := &grantReq{in: in, done: make(chan struct{})}
	c.mu.Lock()
	c.grants = append(c.grants, r)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
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
		// Let a batch build up for the rest of the interval, unless it is already big.
		if wait := c.interval - time.Since(last); wait > 0 && c.size() < c.maxRows {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
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
	c.flushing = map[instKey]queued{}
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
	b.Events = c.events[:nev:nev]
	c.events = c.events[nev:]
	reqs := c.grants
	c.grants = nil
	c.mu.Unlock()
	if nrows == 0 && len(b.Events) == 0 && len(reqs) == 0 {
		return 0, nil
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
			} else if !q.routine {
				newer.routine = false // the failed row's other changes still need writing
				c.pending[k] = newer
			}
		}
		c.events = append(b.Events, c.events...)
	}
	c.flushing = nil
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
