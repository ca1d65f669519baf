package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what a token may do.
type Role string

// Roles.
const (
	RoleAdmin    Role = "admin"    // everything
	RoleReadOnly Role = "readonly" // reads only
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleReadOnly:
		return r, nil
	}
	return "", invalidf("unknown role %q (roles: admin, readonly)", s)
}

// Token is an admin API token. Only its SHA-256 is stored; the secret is shown once.
type Token struct {
	ID      string
	Role    Role
	Name    string
	Created time.Time
}

// tokenPrefix marks twinslot tokens so that secret scanners and people recognise them.
const tokenPrefix = "tst_"

// MaxTokenLen bounds what Authenticate hashes.
const MaxTokenLen = 256

// CreateToken creates a token and returns its secret, which is not stored.
func (db *DB) CreateToken(ctx context.Context, role Role, name string, now time.Time) (string, Token, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", Token{}, err
	}
	if err := checkText("token name", name, MaxNameLen, false); err != nil {
		return "", Token{}, err
	}
	var id [6]byte
	var key [32]byte
	rand.Read(id[:])
	rand.Read(key[:])
	t := Token{ID: hex.EncodeToString(id[:]), Role: role, Name: name, Created: fromMS(ms(now))}
	secret := tokenPrefix + t.ID + "_" + base64.RawURLEncoding.EncodeToString(key[:])
	err := db.tx(ctx, "create token", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tokens (id, hash, role, name, created) VALUES ($1, $2, $3, $4, $5)`,
			t.ID, hashToken(secret), string(role), name, ms(now))
		return err
	})
	if err != nil {
		return "", Token{}, err
	}
	return secret, t, nil
}

func hashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Authenticate returns the token whose secret this is, or ErrNotFound.
func (db *DB) Authenticate(ctx context.Context, secret string) (Token, error) {
	if secret == "" || len(secret) > MaxTokenLen || !strings.HasPrefix(secret, tokenPrefix) {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	t, err := scanToken(db.r.QueryRowContext(ctx, `SELECT id, role, name, created FROM tokens WHERE hash = $1`, hashToken(secret)))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("token: %w", ErrNotFound)
	}
	if err != nil {
		return Token{}, fmt.Errorf("store: check token: %w", err)
	}
	return t, nil
}

func scanToken(s interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var role string
	var created int64
	err := s.Scan(&t.ID, &role, &t.Name, &created)
	t.Role, t.Created = Role(role), fromMS(created)
	return t, err
}

// Tokens lists the tokens (without secrets).
func (db *DB) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT id, role, name, created FROM tokens ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("store: list tokens: %w", err)
	}
	return collect(rows, "list tokens", scanToken)
}

// DeleteToken revokes a token.
func (db *DB) DeleteToken(ctx context.Context, id string) error {
	return db.tx(ctx, "delete token", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		return nil
	})
}
