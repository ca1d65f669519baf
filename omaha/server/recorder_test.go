package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

const testApp = "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc"

func openTestDB(t *testing.T) (*store.DB, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "o.db")
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if err := db.CreateApp(t.Context(), store.App{ID: testApp, Name: "t", Trust: []byte("{}")}, t0); err != nil {
		t.Fatal(err)
	}
	return db, raw
}

func row(i int) store.Instance {
	return store.Instance{AppID: testApp, MachineID: fmt.Sprintf("%032x", i), State: store.StateIdle, Version: "1.0.0", FirstSeen: t0, LastCheck: t0}
}

func newTestCheckins(db *store.DB, queue int) *checkins {
	return newCheckins(db, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics(nil), time.Hour, 100, queue, 1000)
}

// TestCheckinsBackpressure checks a full queue makes put wait, and that it resumes once the
// writer catches up.
func TestCheckinsBackpressure(t *testing.T) {
	db, _ := openTestDB(t)
	c := newTestCheckins(db, 10)
	for i := range 10 {
		if _, err := c.put(t.Context(), row(i), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.put(ctx, row(10), false, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put into a full queue: %v", err)
	}
	// The same row again replaces the queued one instead of growing the queue.
	if got, ok := c.get(instKey{testApp, fmt.Sprintf("%032x", 3)}); !ok || got.MachineID != row(3).MachineID {
		t.Fatalf("get of a queued row: %+v %v", got, ok)
	}
	done := make(chan error)
	go func() { _, err := c.put(t.Context(), row(11), false, nil); done <- err }()
	if err := c.drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("put after the drain: %v", err)
	}
	if err := c.drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	ins, err := db.Instances(t.Context(), store.InstanceFilter{})
	if err != nil || len(ins) != 11 {
		t.Fatalf("%d instances written, want 11 (%v)", len(ins), err)
	}
}

// TestCheckinsRetry makes the database refuse a batch and checks the rows are kept, newer rows
// win, and everything is written once the database works again.
func TestCheckinsRetry(t *testing.T) {
	db, raw := openTestDB(t)
	ctx := t.Context()
	for _, q := range []string{
		`CREATE TABLE fail (x INTEGER)`,
		`INSERT INTO fail VALUES (1)`,
		`CREATE TRIGGER fail_events BEFORE INSERT ON events WHEN (SELECT count(*) FROM fail) > 0 BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	c := newTestCheckins(db, 1000)
	ev := store.Event{AppID: testApp, MachineID: row(0).MachineID, Type: 3, Result: 2, At: t0}
	if _, err := c.put(ctx, row(0), false, []store.Event{ev}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel() // do not wait out the back-off sleep after the failure
	if _, err := c.flushLocked(short); err == nil {
		t.Fatal("flush succeeded despite the failing trigger")
	}
	newer := row(0)
	newer.Version = "2.0.0"
	if _, err := c.put(ctx, newer, true, nil); err != nil {
		t.Fatal(err)
	}
	if ins, _ := db.Instances(ctx, store.InstanceFilter{}); len(ins) != 0 {
		t.Fatalf("a failed batch wrote %d instances", len(ins))
	}
	if _, err := raw.ExecContext(ctx, `DELETE FROM fail`); err != nil {
		t.Fatal(err)
	}
	if err := c.drain(ctx); err != nil {
		t.Fatal(err)
	}
	in, err := db.Instance(ctx, testApp, row(0).MachineID)
	if err != nil || in.Version != "2.0.0" {
		t.Fatalf("after retry: %+v %v", in, err)
	}
	if evs, _ := db.Events(ctx, store.EventFilter{}); len(evs) != 1 {
		t.Fatalf("%d events after retry, want 1", len(evs))
	}
}

// TestCheckinsGrants checks grants are decided in the batch after the queued rows.
func TestCheckinsGrants(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := t.Context()
	g, err := db.CreateGroup(ctx, store.Group{AppID: testApp, Name: "g", Channel: "stable",
		Policy: store.Policy{Enabled: true, MaxUpdates: 1, Period: time.Hour}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCheckins(db, 1000)
	c.interval = time.Millisecond
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.run(bg, ctx); close(done) }()
	defer func() { stop(); <-done }()
	cand := func(i int) store.Instance {
		in := row(i)
		in.GroupID, in.State, in.GrantedVersion, in.GrantedAt = g.ID, store.StateGranted, "1.1.0", t0
		return in
	}
	r0, err := c.grant(ctx, cand(0))
	if err != nil || !r0.OK {
		t.Fatalf("first grant: %+v %v", r0, err)
	}
	r1, err := c.grant(ctx, cand(1))
	if err != nil || r1.OK || r1.Reason != "rate-limited" {
		t.Fatalf("second grant: %+v %v", r1, err)
	}
}

// TestCheckinsDurable checks that wait returns only once a put and everything before it is
// committed, flushing without waiting out the interval, and gives up with the caller's
// context while the database refuses the batch.
func TestCheckinsDurable(t *testing.T) {
	db, raw := openTestDB(t)
	ctx := t.Context()
	c := newTestCheckins(db, 1000) // an interval of an hour: only waiters make it flush
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.run(bg, ctx); close(done) }()
	defer func() { stop(); <-done }()

	ev := func(i int) []store.Event {
		return []store.Event{{AppID: testApp, MachineID: row(i).MachineID, Type: 3, Result: 1, At: t0}}
	}
	if _, err := c.put(ctx, row(0), false, nil); err != nil { // a routine row before it
		t.Fatal(err)
	}
	seq, err := c.put(ctx, row(1), false, ev(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ctx, seq); err != nil {
		t.Fatal(err)
	}
	ins, _ := db.Instances(ctx, store.InstanceFilter{})
	evs, _ := db.Events(ctx, store.EventFilter{})
	if len(ins) != 2 || len(evs) != 1 {
		t.Fatalf("after wait: %d instances, %d events; want 2 and 1", len(ins), len(evs))
	}

	// While the database refuses, a waiter gives up with its context and nothing is written.
	for _, q := range []string{
		`CREATE TABLE fail (x INTEGER)`, `INSERT INTO fail VALUES (1)`,
		`CREATE TRIGGER fail_events BEFORE INSERT ON events WHEN (SELECT count(*) FROM fail) > 0 BEGIN SELECT RAISE(ABORT, 'injected failure'); END`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	seq, err = c.put(ctx, row(2), false, ev(2))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.wait(short, seq); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a failing database: %v", err)
	}
	if evs, _ := db.Events(ctx, store.EventFilter{}); len(evs) != 1 {
		t.Fatalf("%d events while the database refuses, want 1", len(evs))
	}
	if _, err := raw.ExecContext(ctx, `DELETE FROM fail`); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if evs, _ := db.Events(ctx, store.EventFilter{}); len(evs) != 2 {
		t.Fatalf("%d events after the database recovered, want 2", len(evs))
	}
}

// TestCheckinsCache checks the instance cache: preloaded rows are known, a miss is surely
// absent only while the cache holds every stored row, and written rows are cached.
func TestCheckinsCache(t *testing.T) {
	db, _ := openTestDB(t)
	ctx := t.Context()
	c := newTestCheckins(db, 1000)
	for i := range 3 {
		if _, err := c.put(ctx, row(i), false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.drain(ctx); err != nil {
		t.Fatal(err)
	}
	key := func(i int) instKey { return instKey{testApp, row(i).MachineID} }
	for _, tc := range []struct {
		name         string
		cacheRows    int
		known1       bool
		absentUnseen bool
	}{
		{"off", 0, false, false},
		{"too small", 2, false, false}, // which two rows it keeps is arbitrary; row 1 is not asserted below
		{"all", 10, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c2 := newCheckins(db, c.log, newMetrics(nil), time.Hour, 100, 1000, tc.cacheRows)
			if err := c2.preload(ctx, db); err != nil {
				t.Fatal(err)
			}
			_, known, _ := c2.lookup(key(1))
			if tc.cacheRows != 2 && known != tc.known1 {
				t.Errorf("row 1 known = %v, want %v", known, tc.known1)
			}
			if _, known, absent := c2.lookup(key(99)); known || absent != tc.absentUnseen {
				t.Errorf("unseen row: known %v absent %v, want absent %v", known, absent, tc.absentUnseen)
			}
		})
	}
	// Rows written by the writer are cached; overflowing the cache makes misses uncertain.
	empty, _ := openTestDB(t)
	small := newCheckins(empty, c.log, newMetrics(nil), time.Hour, 100, 1000, 2)
	if err := small.preload(ctx, empty); err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 13; i++ {
		if _, err := small.put(ctx, row(i), false, nil); err != nil {
			t.Fatal(err)
		}
		if err := small.drain(ctx); err != nil {
			t.Fatal(err)
		}
		if _, known, _ := small.lookup(key(i)); !known {
			t.Fatalf("row %d not cached after its write", i)
		}
		if _, _, absent := small.lookup(key(99)); absent != (i < 12) {
			t.Fatalf("after %d rows: a miss is absent = %v", i-9, absent)
		}
	}
}

// TestKeyLocks checks one key is serialised and other keys do not wait for it.
func TestKeyLocks(t *testing.T) {
	l := keyLocks{seed: maphash.MakeSeed()}
	unlockA := l.lock("a")
	got := make(chan string, 2)
	var wg sync.WaitGroup
	wg.Go(func() { u := l.lock("a"); got <- "a"; u() })
	wg.Go(func() { u := l.lock("b"); got <- "b"; u() })
	if k := <-got; k != "b" {
		t.Fatalf("%s acquired while a was held", k)
	}
	unlockA()
	if k := <-got; k != "a" {
		t.Fatalf("got %s", k)
	}
	wg.Wait()
	for i := range l.shards {
		if n := len(l.shards[i].m); n != 0 {
			t.Fatalf("lock table keeps %d unused keys", n)
		}
	}
}
