package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Real is the system clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Fake is a manual clock: After channels fire only when Advance moves past their deadline.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	changed chan struct{} // closed and replaced whenever a waiter is added
}

type waiter struct {
	at time.Time
	d  time.Duration
	ch chan time.Time
}

// NewFake returns a fake clock at t.
func NewFake(t time.Time) *Fake {
	return &Fake{now: t, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives the fake time once it is at least d later.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, waiter{at: f.now.Add(d), d: d, ch: ch})
	close(f.changed)
	f.changed = make(chan struct{})
	return ch
}

// Advance moves the clock by d and fires every waiter that is due, in deadline order.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fire(f.now.Add(d))
}

// Set moves the clock to t and fires every waiter that is due, in deadline order.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fire(t)
}

// fire moves the clock to now and fires the due waiters; f.mu is held.
func (f *Fake) fire(now time.Time) {
	f.now = now
	sort.SliceStable(f.waiters, func(i, j int) bool { return f.waiters[i].at.Before(f.waiters[j].at) })
	keep := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(f.now) {
			w.ch <- f.now
			continue
		}
		keep = append(keep, w)
	}
	f.waiters = keep
}

// Pending returns the durations the current waiters asked for, in deadline order.
func (f *Fake) Pending() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := append([]waiter(nil), f.waiters...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].at.Before(ws[j].at) })
	out := make([]time.Duration, len(ws))
	for i, w := range ws {
		out[i] = w.d
	}
	return out
}

// WaitFor blocks until at least n waiters are pending (or ctx ends) and returns Pending().
// Stale waiters (abandoned by a select that took another case) count too.
func (f *Fake) WaitFor(ctx context.Context, n int) ([]time.Duration, error) {
	for {
		f.mu.Lock()
		if len(f.waiters) >= n {
			f.mu.Unlock()
			return f.Pending(), nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// AdvanceToNext moves the clock to the earliest pending deadline and fires it; it returns
// the distance moved (0 when nothing is pending).
func (f *Fake) AdvanceToNext() time.Duration {
	f.mu.Lock()
	if len(f.waiters) == 0 {
		f.mu.Unlock()
		return 0
	}
	next := f.waiters[0].at
	for _, w := range f.waiters {
		if w.at.Before(next) {
			next = w.at
		}
	}
	d := next.Sub(f.now)
	f.mu.Unlock()
	f.Advance(d)
	return d
}
