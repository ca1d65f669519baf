package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"
)

// querier is what reads need; *sql.DB and *sql.Tx both have it.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const pkgCols = `p.id, p.app_id, p.version, p.board, p.security_version, p.file_name, p.size, p.sha256, p.sha1, p.path, p.url, p.withdrawn, p.created`

func scanPackage(s interface{ Scan(...any) error }) (Package, error) {
	var p Package
	var sec, created int64
	err := s.Scan(&p.ID, &p.AppID, &p.Version, &p.Board, &sec, &p.FileName, &p.Size, &p.SHA256, &p.SHA1, &p.Path, &p.URL, &p.Withdrawn, &created)
	p.SecurityVersion, p.Created = uint64(sec), fromMS(created)
	return p, err
}

func checkPackage(p Package) error {
	if err := checkText("version", p.Version, MaxNameLen, true); err != nil {
		return err
	}
	if err := checkText("board", p.Board, MaxNameLen, true); err != nil {
		return err
	}
	if err := checkText("file name", p.FileName, MaxNameLen, true); err != nil {
		return err
	}
	if p.Size <= 0 {
		return invalidf("package size %d is not positive", p.Size)
	}
	if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != 32 {
		return invalidf("sha256 %q is not 64 hex digits", p.SHA256)
	}
	if b, err := base64.StdEncoding.DecodeString(p.SHA1); err != nil || len(b) != 20 {
		return invalidf("sha1 %q is not a base64 SHA-1", p.SHA1)
	}
	if p.SecurityVersion > 1<<62 {
		return invalidf("security version %d is out of range", p.SecurityVersion)
	}
	if (p.Path == "") == (p.URL == "") {
		return invalidf("a package needs exactly one of a stored path and an external URL")
	}
	if p.URL != "" {
		if err := CheckURL(p.URL); err != nil {
			return err
		}
	}
	return nil
}

// CheckURL validates an external download URL (http or https, absolute, bounded).
func CheckURL(s string) error {
	if len(s) > MaxURLLen {
		return invalidf("URL is longer than %d bytes", MaxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalidf("URL %q is not an absolute http(s) URL", s)
	}
	return nil
}

// AddPackage stores a package and, when channel is not empty, points that channel at it.
// Publishing the same file again is not an error: the existing package is returned. A different
// file with the same (app, board, version) is ErrExists; a withdrawn one is ErrInvalid.
func (db *DB) AddPackage(ctx context.Context, p Package, channel string, now time.Time) (Package, error) {
	if err := checkPackage(p); err != nil {
		return Package{}, err
	}
	if channel != "" && !IsChannel(channel) {
		return Package{}, invalidf("unknown channel %q (channels: alpha, beta, stable)", channel)
	}
	var out Package
	err := db.tx(ctx, "add package", func(tx *sql.Tx) error {
		if _, err := appExists(ctx, tx, p.AppID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO packages (app_id, version, board, security_version, file_name, size, sha256, sha1, path, url, withdrawn, created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE, $11) ON CONFLICT (app_id, board, version) DO NOTHING`,
			p.AppID, p.Version, p.Board, int64(p.SecurityVersion), p.FileName, p.Size, p.SHA256, p.SHA1, p.Path, p.URL, ms(now))
		if err != nil {
			return err
		}
		inserted, _ := res.RowsAffected()
		out, err = scanPackage(tx.QueryRowContext(ctx, `SELECT `+pkgCols+` FROM packages p WHERE p.app_id = $1 AND p.board = $2 AND p.version = $3`,
			p.AppID, p.Board, p.Version))
		if err != nil {
			return err
		}
		if inserted == 0 {
			if out.SHA256 != p.SHA256 {
				return fmt.Errorf("version %s for board %s is already published with sha256 %s: publish a new version: %w", p.Version, p.Board, out.SHA256, ErrExists)
			}
			if out.Withdrawn {
				return invalidf("version %s for board %s was withdrawn: publish a new version", p.Version, p.Board)
			}
		}
		if channel != "" {
			if err := pointChannel(ctx, tx, p.AppID, channel, out, now); err != nil {
				return err
			}
		}
		return bumpCatalog(ctx, tx)
	})
	if err != nil {
		return Package{}, err
	}
	return out, nil
}

func appExists(ctx context.Context, q querier, appID string) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM apps WHERE id = $1`, appID).Scan(&n); err != nil {
		return false, err
	}
	if n == 0 {
		return false, fmt.Errorf("app %s: %w", appID, ErrNotFound)
	}
	return true, nil
}

func pointChannel(ctx context.Context, tx *sql.Tx, appID, channel string, p Package, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO channel_history (app_id, channel, board, package_id, at) VALUES ($1, $2, $3, $4, $5)`,
		appID, channel, p.Board, p.ID, ms(now))
	return err
}

// Packages returns an app's packages, newest first.
func (db *DB) Packages(ctx context.Context, appID string) ([]Package, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+pkgCols+` FROM packages p WHERE p.app_id = $1 ORDER BY p.id DESC`, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list packages: %w", err)
	}
	return collect(rows, "list packages", scanPackage)
}

// PackageBySHA256 returns a package whose file has the given sha256 (hex).
func (db *DB) PackageBySHA256(ctx context.Context, sha string) (Package, error) {
	// Every Range request of a download asks this: a prepared, indexed lookup.
	st, err := db.stmt(ctx, true, `SELECT `+pkgCols+` FROM packages p WHERE p.sha256 = $1 ORDER BY p.id LIMIT 1`)
	if err != nil {
		return Package{}, fmt.Errorf("store: find package: %w", err)
	}
	p, err := scanPackage(st.QueryRowContext(ctx, sha))
	if errors.Is(err, sql.ErrNoRows) {
		return Package{}, fmt.Errorf("package with sha256 %s: %w", sha, ErrNotFound)
	}
	if err != nil {
		return Package{}, fmt.Errorf("store: find package: %w", err)
	}
	return p, nil
}

// currentSQL selects, per (app, channel, board), the newest history entry whose package is not
// withdrawn. $1 = app id, or "" for every app.
const currentSQL = `SELECT h.app_id, h.channel, ` + pkgCols + ` FROM channel_history h JOIN packages p ON p.id = h.package_id
WHERE ($1 = '' OR h.app_id = $1) AND p.withdrawn = FALSE AND h.id = (
	SELECT max(h2.id) FROM channel_history h2 JOIN packages p2 ON p2.id = h2.package_id
	WHERE h2.app_id = h.app_id AND h2.channel = h.channel AND h2.board = h.board AND p2.withdrawn = FALSE)`

// channels returns the channels of one app (or of every app when appID is "") with their
// current packages, ordered by app and promotion order.
func channels(ctx context.Context, q querier, appID string) ([]Channel, error) {
	rows, err := q.QueryContext(ctx, `SELECT app_id, name, external_url FROM channels WHERE ($1 = '' OR app_id = $1)`, appID)
	if err != nil {
		return nil, err
	}
	chs, err := collect(rows, "list channels", func(s interface{ Scan(...any) error }) (Channel, error) {
		c := Channel{Packages: map[string]Package{}}
		return c, s.Scan(&c.AppID, &c.Name, &c.ExternalURL)
	})
	if err != nil {
		return nil, err
	}
	idx := map[[2]string]int{}
	for i, c := range chs {
		idx[[2]string{c.AppID, c.Name}] = i
	}
	rows, err = q.QueryContext(ctx, currentSQL, appID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var app, ch string
		var p Package
		var sec, created int64
		if err := rows.Scan(&app, &ch, &p.ID, &p.AppID, &p.Version, &p.Board, &sec, &p.FileName, &p.Size, &p.SHA256, &p.SHA1, &p.Path, &p.URL, &p.Withdrawn, &created); err != nil {
			return nil, err
		}
		p.SecurityVersion, p.Created = uint64(sec), fromMS(created)
		if i, ok := idx[[2]string{app, ch}]; ok {
			chs[i].Packages[p.Board] = p
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortChannels(chs)
	return chs, nil
}

func sortChannels(chs []Channel) {
	slices.SortStableFunc(chs, func(a, b Channel) int {
		if c := cmp.Compare(a.AppID, b.AppID); c != 0 {
			return c
		}
		return cmp.Compare(slices.Index(Channels, a.Name), slices.Index(Channels, b.Name))
	})
}

// Channels returns an app's channels with their current package per board.
func (db *DB) Channels(ctx context.Context, appID string) ([]Channel, error) {
	if _, err := appExists(ctx, db.r, appID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("store: list channels: %w", err)
	}
	chs, err := channels(ctx, db.r, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list channels: %w", err)
	}
	return chs, nil
}

// SetChannelURL sets (or with "" clears) a channel's external download base URL. The URL may
// contain {board}, {version} and {sha256}, replaced per package.
func (db *DB) SetChannelURL(ctx context.Context, appID, channel, base string) error {
	if base != "" {
		if err := CheckURL(base); err != nil {
			return err
		}
	}
	return db.tx(ctx, "set channel URL", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE channels SET external_url = $1 WHERE app_id = $2 AND name = $3`, base, appID, channel)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("channel %s of app %s: %w", channel, appID, ErrNotFound)
		}
		return bumpCatalog(ctx, tx)
	})
}

// Promote points channel to at the packages of version that channel from carries now (one per
// board). It returns those packages.
func (db *DB) Promote(ctx context.Context, appID, version, from, to string, now time.Time) ([]Package, error) {
	if !IsChannel(from) || !IsChannel(to) {
		return nil, invalidf("unknown channel %q or %q (channels: alpha, beta, stable)", from, to)
	}
	if from == to {
		return nil, invalidf("cannot promote from %s to itself", from)
	}
	var out []Package
	err := db.tx(ctx, "promote", func(tx *sql.Tx) error {
		if _, err := appExists(ctx, tx, appID); err != nil {
			return err
		}
		chs, err := channels(ctx, tx, appID)
		if err != nil {
			return err
		}
		for _, c := range chs {
			if c.Name != from {
				continue
			}
			for _, b := range slices.Sorted(maps.Keys(c.Packages)) {
				if p := c.Packages[b]; p.Version == version {
					out = append(out, p)
				}
			}
		}
		if len(out) == 0 {
			return fmt.Errorf("channel %s does not carry version %s for any board (publish it there first): %w", from, version, ErrNotFound)
		}
		for _, p := range out {
			if err := pointChannel(ctx, tx, appID, to, p, now); err != nil {
				return err
			}
		}
		return bumpCatalog(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Withdraw marks every package of version withdrawn: no channel offers them any more, and each
// channel that pointed at one falls back to its previous package. It returns the packages.
func (db *DB) Withdraw(ctx context.Context, appID, version string) ([]Package, error) {
	var out []Package
	err := db.tx(ctx, "withdraw", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+pkgCols+` FROM packages p WHERE p.app_id = $1 AND p.version = $2 AND p.withdrawn = FALSE ORDER BY p.board`, appID, version)
		if err != nil {
			return err
		}
		if out, err = collect(rows, "withdraw", scanPackage); err != nil {
			return err
		}
		if len(out) == 0 {
			return fmt.Errorf("app %s has no published version %s: %w", appID, version, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE packages SET withdrawn = TRUE WHERE app_id = $1 AND version = $2`, appID, version); err != nil {
			return err
		}
		return bumpCatalog(ctx, tx)
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Withdrawn = true
	}
	return out, nil
}
