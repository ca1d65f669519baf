package store

import "context"

// OpenAt opens dsn with the migrations up to version only, and Exec writes with plain SQL: the
// external tests build a database of an older schema with them and then upgrade it.
func OpenAt(ctx context.Context, dsn string, version int) (*DB, error) {
	return open(ctx, dsn, version)
}

func (db *DB) Exec(ctx context.Context, query string, args ...any) error {
	_, err := db.w.ExecContext(ctx, query, args...)
	return err
}
