package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite pool sizes: one writer (SQLite allows one anyway; queueing in Go is cheaper than
// SQLITE_BUSY retries), a few readers (WAL lets them run beside the writer).
const (
	sqliteReaders     = 4
	sqliteBusyTimeout = 10000 // ms
	sqliteMmap        = 1 << 30
	sqliteCacheKiB    = 16 << 10
)

var sqliteDialect = dialect{
	name:      "sqlite",
	autoID:    "INTEGER PRIMARY KEY AUTOINCREMENT",
	clustered: " WITHOUT ROWID",
	lower:     sqliteLowerFunc,
}

// sqliteLowerFunc lower-cases text as strings.ToLower (and PostgreSQL's lower) does: SQLite's
// own lower() changes only ASCII letters, so a search for a non-ASCII alias missed it.
const sqliteLowerFunc = "twinslot_lower"

// registerSQLiteLower adds sqliteLowerFunc to the connections the "sqlite" driver opens from
// then on (the driver keeps one registry for the process).
var registerSQLiteLower = sync.OnceValue(func() error {
	return sqlite.RegisterDeterministicScalarFunction(sqliteLowerFunc, 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		}
		return args[0], nil
	})
})

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, fmt.Errorf("store: empty database path: give a SQLite file path or a postgres:// URL")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: SQLite path %q contains '?' or '#': use a plain file path", path)
	}
	if err := privateFiles(path); err != nil {
		return nil, err
	}
	if err := registerSQLiteLower(); err != nil {
		return nil, fmt.Errorf("store: register SQLite function %s: %w", sqliteLowerFunc, err)
	}
	// mmap lets reads hit the page cache without a pread per page; cache_size keeps hot
	// index pages in each connection.
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"+
		"&_pragma=mmap_size(%d)&_pragma=cache_size(-%d)", sqliteBusyTimeout, sqliteMmap, sqliteCacheKiB)
	// The writer never checkpoints on commit (wal_autocheckpoint 0): a checkpointer of its own
	// (checkpoints) copies the WAL into the database file beside it, so a commit costs only
	// its WAL frames.
	w, err := sql.Open("sqlite", path+"?_txlock=immediate&_pragma=wal_autocheckpoint(0)&"+common)
	if err != nil {
		return nil, fmt.Errorf("store: open SQLite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	// The first connection creates the file and switches it to WAL before any reader opens it.
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open SQLite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", path+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open SQLite %s for reading: %w", path, err)
	}
	r.SetMaxOpenConns(sqliteReaders)
	r.SetMaxIdleConns(sqliteReaders)
	r.SetConnMaxLifetime(0)
	ck, err := sql.Open("sqlite", path+"?"+common)
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("store: open SQLite %s for checkpoints: %w", path, err)
	}
	ck.SetMaxOpenConns(1)
	ck.SetMaxIdleConns(1)
	ck.SetConnMaxLifetime(0)
	db := &DB{w: w, r: r, d: sqliteDialect, values: valuesSQL{positional: true}}
	stop, done := make(chan struct{}), make(chan struct{})
	go checkpoints(context.WithoutCancel(ctx), ck, stop, done)
	db.closeCheckpointer = func() error {
		close(stop)
		<-done
		return ck.Close()
	}
	return db, nil
}

// sqliteCheckpointEvery is how often the checkpointer copies the WAL into the database file.
const sqliteCheckpointEvery = 500 * time.Millisecond

// checkpoints runs a PASSIVE checkpoint every sqliteCheckpointEvery until stop is closed, and a
// last one then. PASSIVE never blocks the writer or readers; it copies what it can, and the
// writer starts the WAL over once a checkpoint has copied all of it.
func checkpoints(ctx context.Context, ck *sql.DB, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(sqliteCheckpointEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			ck.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
			return
		case <-t.C:
			// A failure is retried at the next tick; the WAL keeps every commit meanwhile.
			ck.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
		}
	}
}

// privateFiles creates the database file readable by its owner only (it holds token hashes and
// the fleet's inventory), before SQLite creates it 0644; SQLite gives its -wal and -shm files
// the database file's mode. A database (or -wal, -shm) left readable by others by an older
// omahad is made owner-only.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: open SQLite %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && st.Mode().Perm()&0o077 != 0 {
			err = os.Chmod(p, st.Mode().Perm()&0o700)
		}
		if err != nil {
			return fmt.Errorf("store: make %s readable by its owner only: %w", p, err)
		}
	}
	return nil
}
