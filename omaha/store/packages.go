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

const pkgCols = `p.id, p.app_id, p.version, p.board, p.security_version, p.file_name, p.size, p.sha256, p.sha1, p.path, p.url, p.withdrawn, p.created, p.format`

func scanPackage(s interface{ Scan(...any) error }) (Package, error) {
	return scanPackageWith(s)
}

// scanPackageWith scans pkgCols after the destinations in first.
func scanPackageWith(s interface{ Scan(...any) error }, first ...any) (Package, error) {
	var p Package
	var sec, created int64
	err := s.Scan(append(first, &p.ID, &p.AppID, &p.Version, &p.Board, &sec, &p.FileName, &p.Size, &p.SHA256, &p.SHA1, &p.Path, &p.URL, &p.Withdrawn, &created, &p.Format)...)
	p.SecurityVersion, p.Created = uint64(sec), fromMS(created)
	return p, err
}

// withExtras fills the Extras of pkgs (all of one app, or of any app when appID is "").
func withExtras(ctx context.Context, q querier, appID string, pkgs []*Package) error {
	if len(pkgs) == 0 {
		return nil
	}
	byID := map[int64][]*Package{}
	for _, p := range pkgs {
		p.Extras = nil
		byID[p.ID] = append(byID[p.ID], p)
	}
	rows, err := q.QueryContext(ctx, `SELECT f.package_id, f.name, f.size, f.sha256, f.sha1, f.path FROM package_files f
JOIN packages p ON p.id = f.package_id WHERE ($1 = '' OR p.app_id = $1) ORDER BY f.package_id, f.position`, appID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var f File
		if err := rows.Scan(&id, &f.Name, &f.Size, &f.SHA256, &f.SHA1, &f.Path); err != nil {
			return err
		}
		for _, p := range byID[id] {
			p.Extras = append(p.Extras, f)
		}
	}
	return rows.Err()
}

// checkDigests checks a hex SHA-256 and a base64 SHA-1.
func checkDigests(what, sha256Hex, sha1B64 string) error {
	if b, err := hex.DecodeString(sha256Hex); err != nil || len(b) != 32 {
		return invalidf("%s: sha256 %q is not 64 hex digits", what, sha256Hex)
	}
	if b, err := base64.StdEncoding.DecodeString(sha1B64); err != nil || len(b) != 20 {
		return invalidf("%s: sha1 %q is not a base64 SHA-1", what, sha1B64)
	}
	return nil
}

func checkExtras(p Package) error {
	if len(p.Extras) > 0 && p.Format != FormatFlatcar {
		return invalidf("only Flatcar packages carry extra files")
	}
	if len(p.Extras) > MaxExtras {
		return invalidf("%d extra files: at most %d", len(p.Extras), MaxExtras)
	}
	seen := map[string]bool{p.FileName: true}
	for _, f := range p.Extras {
		if err := checkText("extra file name", f.Name, MaxNameLen, true); err != nil {
			return err
		}
		if seen[f.Name] {
			return invalidf("extra file %q: the name is used twice in the package", f.Name)
		}
		seen[f.Name] = true
		if f.Size <= 0 {
			return invalidf("extra file %q: size %d is not positive", f.Name, f.Size)
		}
		if err := checkDigests("extra file "+f.Name, f.SHA256, f.SHA1); err != nil {
			return err
		}
		if (f.Path == "") != (p.Path == "") {
			return invalidf("extra file %q: extras are stored exactly when the package is", f.Name)
		}
	}
	return nil
}

// MaxExtras bounds the extra files of one package.
const MaxExtras = 64

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
	if err := checkDigests("package", p.SHA256, p.SHA1); err != nil {
		return err
	}
	if p.Format != FormatTwinslot && p.Format != FormatFlatcar {
		return invalidf("package format %q: want %s or %s", p.Format, FormatTwinslot, FormatFlatcar)
	}
	if err := checkExtras(p); err != nil {
		return err
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

// AddPackage stores a package (with its extra files) and, when channel is not empty, points
// that channel at it. An empty Format means FormatTwinslot.
// Publishing the same file again is not an error: the existing package is returned. A different
// file with the same (app, board, version) is ErrExists; a withdrawn one is ErrInvalid.
func (db *DB) AddPackage(ctx context.Context, p Package, channel string, now time.Time) (Package, error) {
	if p.Format == "" {
		p.Format = FormatTwinslot
	}
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
		res, err := tx.ExecContext(ctx, `INSERT INTO packages (app_id, version, board, security_version, file_name, size, sha256, sha1, path, url, withdrawn, created, format)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE, $11, $12) ON CONFLICT (app_id, board, version) DO NOTHING`,
			p.AppID, p.Version, p.Board, int64(p.SecurityVersion), p.FileName, p.Size, p.SHA256, p.SHA1, p.Path, p.URL, ms(now), p.Format)
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
		} else {
			for i, f := range p.Extras {
				if _, err := tx.ExecContext(ctx, `INSERT INTO package_files (package_id, position, name, size, sha256, sha1, path) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
					out.ID, i, f.Name, f.Size, f.SHA256, f.SHA1, f.Path); err != nil {
					return err
				}
			}
		}
		if err := withExtras(ctx, tx, p.AppID, []*Package{&out}); err != nil {
			return err
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
	ps, err := collect(rows, "list packages", scanPackage)
	if err != nil {
		return nil, err
	}
	ptrs := make([]*Package, len(ps))
	for i := range ps {
		ptrs[i] = &ps[i]
	}
	if err := withExtras(ctx, db.r, appID, ptrs); err != nil {
		return nil, fmt.Errorf("store: list packages: %w", err)
	}
	return ps, nil
}

// PackageFile returns the stored path of the file name served with the package of sha256
// (hex): the package's own file, or one of its extras.
func (db *DB) PackageFile(ctx context.Context, sha, name string) (Package, string, error) {
	p, err := db.PackageBySHA256(ctx, sha)
	if err != nil || name == p.FileName || p.Format != FormatFlatcar {
		return p, p.Path, err
	}
	st, err := db.stmt(ctx, true, `SELECT path FROM package_files WHERE package_id = $1 AND name = $2`)
	if err != nil {
		return Package{}, "", fmt.Errorf("store: find package file: %w", err)
	}
	var path string
	err = st.QueryRowContext(ctx, p.ID, name).Scan(&path)
	if errors.Is(err, sql.ErrNoRows) {
		return p, p.Path, nil // any other name serves the package itself, as before extras
	}
	if err != nil {
		return Package{}, "", fmt.Errorf("store: find package file: %w", err)
	}
	return p, path, nil
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
	type current struct {
		i int
		p Package
	}
	var cur []*current
	for rows.Next() {
		var app, ch string
		p, err := scanPackageWith(rows, &app, &ch)
		if err != nil {
			return nil, err
		}
		if i, ok := idx[[2]string{app, ch}]; ok {
			cur = append(cur, &current{i, p})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	ptrs := make([]*Package, len(cur))
	for i, c := range cur {
		ptrs[i] = &c.p
	}
	if err := withExtras(ctx, q, appID, ptrs); err != nil {
		return nil, err
	}
	for _, c := range cur {
		chs[c.i].Packages[c.p.Board] = c.p
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
	return db.promote(ctx, appID, version, from, to, false, now)
}

// PromoteGated is Promote under the promotion gate of channel to (see Gate): when the gate
// does not pass, it changes nothing and returns a *GateError listing each check.
func (db *DB) PromoteGated(ctx context.Context, appID, version, from, to string, now time.Time) ([]Package, error) {
	return db.promote(ctx, appID, version, from, to, true, now)
}

func (db *DB) promote(ctx context.Context, appID, version, from, to string, gated bool, now time.Time) ([]Package, error) {
	if !IsChannel(from) || !IsChannel(to) {
		return nil, invalidf("unknown channel %q or %q (channels: alpha, beta, stable)", from, to)
	}
	if from == to {
		return nil, invalidf("cannot promote from %s to itself", from)
	}
	var out []Package
	err := db.tx(ctx, "promote", func(tx *sql.Tx) error {
		if gated {
			// The gate speaks only of a version its source carries: check that first.
			if _, err := sourcePackages(ctx, tx, appID, version, from); err != nil {
				return err
			}
			checks, err := checkGate(ctx, tx, appID, version, from, to, now)
			if err != nil {
				return err
			}
			if !Passed(checks) {
				return &GateError{Version: version, From: from, To: to, Checks: checks}
			}
		}
		var err error
		out, err = promoteTx(ctx, tx, appID, version, from, to, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sourcePackages returns the packages of version that channel from carries now (one per board).
func sourcePackages(ctx context.Context, tx *sql.Tx, appID, version, from string) ([]Package, error) {
	if _, err := appExists(ctx, tx, appID); err != nil {
		return nil, err
	}
	chs, err := channels(ctx, tx, appID)
	if err != nil {
		return nil, err
	}
	var out []Package
	c := channelNamed(chs, from)
	for _, b := range slices.Sorted(maps.Keys(c.Packages)) {
		if p := c.Packages[b]; p.Version == version {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("channel %s does not carry version %s for any board (publish it there first): %w", from, version, ErrNotFound)
	}
	return out, nil
}

// promoteTx points channel to at the packages of version that from carries, inside tx.
func promoteTx(ctx context.Context, tx *sql.Tx, appID, version, from, to string, now time.Time) ([]Package, error) {
	out, err := sourcePackages(ctx, tx, appID, version, from)
	if err != nil {
		return nil, err
	}
	for _, p := range out {
		if err := pointChannel(ctx, tx, appID, to, p, now); err != nil {
			return nil, err
		}
	}
	return out, bumpCatalog(ctx, tx)
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
