package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultPolicy is the policy of the default groups created with an app: updates enabled, no cap,
// a one-hour period and a one-hour update timeout.
var DefaultPolicy = Policy{Enabled: true, MaxUpdates: 0, Period: time.Hour, UpdateTimeout: time.Hour}

// CreateApp creates an app with its channels and their default groups. An empty trust root
// makes an app that can hold only Flatcar packages until one is set.
func (db *DB) CreateApp(ctx context.Context, a App, now time.Time) error {
	if !IsUUID(a.ID) {
		return invalidf("app id %q is not a lower-case UUID without braces", a.ID)
	}
	if err := checkText("app name", a.Name, MaxNameLen, true); err != nil {
		return err
	}
	if err := checkTrust(a.Trust); err != nil {
		return err
	}
	return db.tx(ctx, "create app", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO apps (id, name, trust, created) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
			a.ID, a.Name, string(a.Trust), ms(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("app %s: %w", a.ID, ErrExists)
		}
		for _, ch := range Channels {
			if _, err := tx.ExecContext(ctx, `INSERT INTO channels (app_id, name, external_url) VALUES ($1, $2, '')`, a.ID, ch); err != nil {
				return err
			}
			g := Group{ID: NewUUID(), AppID: a.ID, Name: ch, Channel: ch, Policy: DefaultPolicy}
			if err := insertGroup(ctx, tx, g, now); err != nil {
				return err
			}
		}
		return bumpCatalog(ctx, tx)
	})
}

func checkTrust(trust []byte) error {
	if len(trust) > MaxTrustLen {
		return invalidf("trust root is larger than %d bytes", MaxTrustLen)
	}
	return nil
}

// SetTrust replaces an app's trust root.
func (db *DB) SetTrust(ctx context.Context, appID string, trust []byte) error {
	if len(trust) == 0 {
		return invalidf("trust root is empty")
	}
	if err := checkTrust(trust); err != nil {
		return err
	}
	return db.tx(ctx, "set trust", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE apps SET trust = $1 WHERE id = $2`, string(trust), appID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("app %s: %w", appID, ErrNotFound)
		}
		return bumpCatalog(ctx, tx)
	})
}

const appCols = `id, name, trust, created`

func scanApp(s interface{ Scan(...any) error }) (App, error) {
	var a App
	var trust string
	var created int64
	err := s.Scan(&a.ID, &a.Name, &trust, &created)
	a.Trust, a.Created = []byte(trust), fromMS(created)
	return a, err
}

// App returns one app.
func (db *DB) App(ctx context.Context, id string) (App, error) {
	a, err := scanApp(db.r.QueryRowContext(ctx, `SELECT `+appCols+` FROM apps WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return App{}, fmt.Errorf("app %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return App{}, fmt.Errorf("store: read app %s: %w", id, err)
	}
	return a, nil
}

// Apps returns every app, ordered by name.
func (db *DB) Apps(ctx context.Context) ([]App, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+appCols+` FROM apps ORDER BY name, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list apps: %w", err)
	}
	return collect(rows, "list apps", scanApp)
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, op string, scan func(interface{ Scan(...any) error }) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return out, nil
}

// IsChannel reports whether name is one of the fixed channels.
func IsChannel(name string) bool { return slices.Contains(Channels, name) }
