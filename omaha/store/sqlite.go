package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
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
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" {
		return nil, fmt.Errorf("store: empty database path: give a SQLite file path or a postgres:// URL")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: SQLite path %q contains '?' or '#': use a plain file path", path)
	}
	// mmap lets reads hit the page cache without a pread per page; cache_size keeps hot
	// index pages in each connection.
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"+
		"&_pragma=mmap_size(%d)&_pragma=cache_size(-%d)", sqliteBusyTimeout, sqliteMmap, sqliteCacheKiB)
	w, err := sql.Open("sqlite", path+"?_txlock=immediate&"+common)
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
	return &DB{w: w, r: r, d: sqliteDialect, values: valuesSQL{positional: true}}, nil
}
