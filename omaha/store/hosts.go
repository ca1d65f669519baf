package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EnrollToken is an enrollment token: a secret an operator hands to the hosts of a fleet (in
// their update.conf) that each exchanges once, with its machine id, for a host credential
// (Enroll). Only the token's SHA-256 is stored; the secret is shown once, at creation.
type EnrollToken struct {
	ID      string
	AppID   string
	GroupID string // "" = the credentials it gives count in any group of the app
	Name    string
	MaxUses int64     // how many hosts may enroll with it; 0 = no limit
	Uses    int64     // how many did
	Expires time.Time // zero = never
	Revoked time.Time // zero = not revoked
	Created time.Time
}

// Usable reports why t cannot enroll a host at now ("" when it can).
func (t EnrollToken) Usable(now time.Time) string {
	switch {
	case !t.Revoked.IsZero():
		return fmt.Sprintf("revoked at %s", t.Revoked.Format(time.RFC3339))
	case !t.Expires.IsZero() && !now.Before(t.Expires):
		return fmt.Sprintf("expired at %s", t.Expires.Format(time.RFC3339))
	case t.MaxUses > 0 && t.Uses >= t.MaxUses:
		return fmt.Sprintf("used up (%d of %d uses)", t.Uses, t.MaxUses)
	}
	return ""
}

// HostCredential is what an enrolled host proves itself with: bound to one app and machine id
// (and to a group when its token was). Only the SHA-256 of the secret is stored.
type HostCredential struct {
	AppID     string
	MachineID string
	Hash      string // hex SHA-256 of the secret (HashCredential)
	GroupID   string // "" = any group of the app
	TokenID   string // the enrollment token it was exchanged for
	Enrolled  time.Time
}

// Prefixes of the secrets: an enrollment token, and the host credential an agent sends as
// "Authorization: Bearer ts-host-…".
const (
	enrollTokenPrefix = "ts-enroll-"
	CredentialPrefix  = "ts-host-"
)

// MaxEnrollUses bounds an enrollment token's uses.
const MaxEnrollUses = 1 << 32

// ErrEnrollRefused is the error Enroll returns for a token that is unknown, revoked, expired or
// used up, or that belongs to another app; the message says which.
var ErrEnrollRefused = errors.New("enrollment refused")

// HashCredential is the stored form of a host credential or enrollment token: hex SHA-256.
func HashCredential(secret string) string { return hashToken(secret) }

func newSecret(prefix string) string {
	var key [32]byte
	rand.Read(key[:])
	return prefix + base64.RawURLEncoding.EncodeToString(key[:])
}

const enrollTokenCols = `id, app_id, group_id, name, max_uses, uses, expires, revoked, created`

func scanEnrollToken(s interface{ Scan(...any) error }) (EnrollToken, error) {
	var t EnrollToken
	var expires, revoked, created int64
	err := s.Scan(&t.ID, &t.AppID, &t.GroupID, &t.Name, &t.MaxUses, &t.Uses, &expires, &revoked, &created)
	t.Expires, t.Revoked, t.Created = fromMS(expires), fromMS(revoked), fromMS(created)
	return t, err
}

// CreateEnrollToken creates an enrollment token for t.AppID (and t.GroupID, a group id of that
// app, when set) with t.Name, t.MaxUses and t.Expires, and returns its secret, which is not
// stored, with the token as stored.
func (db *DB) CreateEnrollToken(ctx context.Context, t EnrollToken, now time.Time) (string, EnrollToken, error) {
	if err := checkText("token name", t.Name, MaxNameLen, false); err != nil {
		return "", EnrollToken{}, err
	}
	if t.MaxUses < 0 || t.MaxUses > MaxEnrollUses {
		return "", EnrollToken{}, invalidf("uses %d is out of range 0..%d (0 = no limit)", t.MaxUses, int64(MaxEnrollUses))
	}
	if !t.Expires.IsZero() && !t.Expires.After(now) {
		return "", EnrollToken{}, invalidf("the token would expire at %s, which is not after now (%s): give a positive --expires",
			t.Expires.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	var id [6]byte
	rand.Read(id[:])
	t.ID, t.Uses, t.Revoked, t.Created = hex.EncodeToString(id[:]), 0, time.Time{}, fromMS(ms(now))
	t.Expires = fromMS(ms(t.Expires))
	secret := newSecret(enrollTokenPrefix)
	err := db.tx(ctx, "create enrollment token", func(tx *sql.Tx) error {
		if _, err := appExists(ctx, tx, t.AppID); err != nil {
			return err
		}
		if t.GroupID != "" {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM update_groups WHERE app_id = $1 AND id = $2`, t.AppID, t.GroupID).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("group %s of app %s: %w", t.GroupID, t.AppID, ErrNotFound)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO enroll_tokens (`+enrollTokenCols+`, hash) VALUES ($1, $2, $3, $4, $5, 0, $6, 0, $7, $8)`,
			t.ID, t.AppID, t.GroupID, t.Name, t.MaxUses, ms(t.Expires), ms(now), hashToken(secret))
		return err
	})
	if err != nil {
		return "", EnrollToken{}, err
	}
	return secret, t, nil
}

// EnrollTokens lists the enrollment tokens of an app (without secrets), oldest first.
func (db *DB) EnrollTokens(ctx context.Context, appID string) ([]EnrollToken, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+enrollTokenCols+` FROM enroll_tokens WHERE app_id = $1 ORDER BY created, id`, appID)
	if err != nil {
		return nil, fmt.Errorf("store: list enrollment tokens: %w", err)
	}
	return collect(rows, "list enrollment tokens", scanEnrollToken)
}

// RevokeEnrollToken revokes an enrollment token of an app: no host enrolls with it any more.
// Hosts that already enrolled keep their credentials. Revoking twice keeps the first time.
func (db *DB) RevokeEnrollToken(ctx context.Context, appID, id string, now time.Time) (EnrollToken, error) {
	var t EnrollToken
	err := db.tx(ctx, "revoke enrollment token", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET revoked = $1 WHERE app_id = $2 AND id = $3 AND revoked = 0`, ms(now), appID, id); err != nil {
			return err
		}
		var err error
		t, err = scanEnrollToken(tx.QueryRowContext(ctx, `SELECT `+enrollTokenCols+` FROM enroll_tokens WHERE app_id = $1 AND id = $2`, appID, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("enrollment token %s of app %s: %w (list them with releasectl enroll-token list)", id, appID, ErrNotFound)
		}
		return err
	})
	return t, err
}

// Enroll exchanges an enrollment token for a new host credential bound to the token's app and
// group and to machineID, and returns the credential's secret (not stored) with the credential.
// appID, when not "", must be the token's app. Enrolling a machine id again replaces its
// credential (a reinstalled host) and bumps the credentials version (CredentialsVersion). A
// token that cannot be used is an ErrEnrollRefused error that says why, and changes nothing.
func (db *DB) Enroll(ctx context.Context, token, appID, machineID string, now time.Time) (string, HostCredential, error) {
	if token == "" || len(token) > MaxTokenLen || !strings.HasPrefix(token, enrollTokenPrefix) {
		return "", HostCredential{}, fmt.Errorf("%w: this is not an enrollment token (they start with %q): ask the operator for one (releasectl enroll-token create)",
			ErrEnrollRefused, enrollTokenPrefix)
	}
	// An unknown token is refused by a read, without taking the writer: /v1/enroll is open to
	// anyone, and a flood of made-up tokens must not queue behind (or ahead of) check-ins.
	var known int
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM enroll_tokens WHERE hash = $1`, hashToken(token)).Scan(&known); err != nil {
		return "", HostCredential{}, fmt.Errorf("store: enroll host: %w", err)
	}
	if known == 0 {
		return "", HostCredential{}, fmt.Errorf("%w: unknown enrollment token: ask the operator for a valid one (releasectl enroll-token list)", ErrEnrollRefused)
	}
	secret := newSecret(CredentialPrefix)
	c := HostCredential{MachineID: machineID, Hash: hashToken(secret), Enrolled: fromMS(ms(now))}
	err := db.tx(ctx, "enroll host", func(tx *sql.Tx) error {
		t, err := scanEnrollToken(tx.QueryRowContext(ctx, `SELECT `+enrollTokenCols+` FROM enroll_tokens WHERE hash = $1`+db.d.forUpdate, hashToken(token)))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: unknown enrollment token: ask the operator for a valid one (releasectl enroll-token list)", ErrEnrollRefused)
		}
		if err != nil {
			return err
		}
		if why := t.Usable(now); why != "" {
			return fmt.Errorf("%w: enrollment token %s %s: ask the operator for a new one", ErrEnrollRefused, t.ID, why)
		}
		if appID != "" && appID != t.AppID {
			return fmt.Errorf("%w: enrollment token %s is for app %s, not %s", ErrEnrollRefused, t.ID, t.AppID, appID)
		}
		c.AppID, c.GroupID, c.TokenID = t.AppID, t.GroupID, t.ID
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET uses = uses + 1 WHERE id = $1 AND ($2 = 0 OR uses < $2)`, t.ID, t.MaxUses)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: enrollment token %s used up: ask the operator for a new one", ErrEnrollRefused, t.ID)
		}
		// A new machine id is inserted. One that has a credential (here, or committed by a
		// concurrent enrollment, which PostgreSQL's insert waits for) has it replaced, and the
		// credentials version is bumped so that other servers drop the old one they cached.
		const insert = `INSERT INTO host_credentials (app_id, machine_id, hash, group_id, token_id, enrolled) VALUES ($1, $2, $3, $4, $5, $6)`
		args := []any{c.AppID, c.MachineID, c.Hash, c.GroupID, c.TokenID, ms(now)}
		res, err = tx.ExecContext(ctx, insert+` ON CONFLICT (app_id, machine_id) DO NOTHING`, args...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, insert+`
ON CONFLICT (app_id, machine_id) DO UPDATE SET hash = excluded.hash, group_id = excluded.group_id, token_id = excluded.token_id, enrolled = excluded.enrolled`,
			args...); err != nil {
			return err
		}
		return bumpCredentials(ctx, tx)
	})
	if err != nil {
		return "", HostCredential{}, err
	}
	return secret, c, nil
}

const credCols = `app_id, machine_id, hash, group_id, token_id, enrolled`

func scanCredential(s interface{ Scan(...any) error }) (HostCredential, error) {
	var c HostCredential
	var enrolled int64
	err := s.Scan(&c.AppID, &c.MachineID, &c.Hash, &c.GroupID, &c.TokenID, &enrolled)
	c.Enrolled = fromMS(enrolled)
	return c, err
}

// HostCredential returns the credential of a machine, or ErrNotFound.
func (db *DB) HostCredential(ctx context.Context, appID, machineID string) (HostCredential, error) {
	c, err := scanCredential(db.r.QueryRowContext(ctx, `SELECT `+credCols+` FROM host_credentials WHERE app_id = $1 AND machine_id = $2`, appID, machineID))
	if errors.Is(err, sql.ErrNoRows) {
		return HostCredential{}, fmt.Errorf("host %s of app %s is not enrolled: %w", machineID, appID, ErrNotFound)
	}
	if err != nil {
		return HostCredential{}, fmt.Errorf("store: read host credential: %w", err)
	}
	return c, nil
}

// EachHostCredential calls fn with every host credential, in no particular order (servers
// fill their credential cache with it at start).
func (db *DB) EachHostCredential(ctx context.Context, fn func(HostCredential)) error {
	rows, err := db.r.QueryContext(ctx, `SELECT `+credCols+` FROM host_credentials`)
	if err != nil {
		return fmt.Errorf("store: read host credentials: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return fmt.Errorf("store: read host credentials: %w", err)
		}
		fn(c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: read host credentials: %w", err)
	}
	return nil
}

// UnenrollHost deletes the credential of a machine: the host must enroll again before a group
// that requires enrollment trusts it. It bumps the credentials version (CredentialsVersion), by
// which other servers sharing the database learn that their cached credentials are stale.
func (db *DB) UnenrollHost(ctx context.Context, appID, machineID string) (HostCredential, error) {
	var c HostCredential
	err := db.tx(ctx, "unenroll host", func(tx *sql.Tx) error {
		var err error
		c, err = scanCredential(tx.QueryRowContext(ctx, `SELECT `+credCols+` FROM host_credentials WHERE app_id = $1 AND machine_id = $2`, appID, machineID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("host %s of app %s is not enrolled: %w", machineID, appID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM host_credentials WHERE app_id = $1 AND machine_id = $2`, appID, machineID); err != nil {
			return err
		}
		return bumpCredentials(ctx, tx)
	})
	return c, err
}

// bumpCredentials records that a host credential was deleted or replaced (CredentialsVersion).
func bumpCredentials(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('credentials', 1)
ON CONFLICT (key) DO UPDATE SET value = meta.value + 1`)
	return err
}

// CredentialsVersion returns a number that changes whenever a host credential is deleted
// (UnenrollHost) or replaced (Enroll of an enrolled machine id); 0 before the first.
func (db *DB) CredentialsVersion(ctx context.Context) (int64, error) {
	var v int64
	err := db.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'credentials'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: credentials version: %w", err)
	}
	return v, nil
}
