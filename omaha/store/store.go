package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Channels every app has, in promotion order.
var Channels = []string{"alpha", "beta", "stable"}

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInvalid  = errors.New("invalid")
)

// Limits on stored strings (the API checks them before they reach the store; the store checks
// again so that no path writes unbounded data).
const (
	MaxNameLen  = 128
	MaxURLLen   = 2048
	MaxTrustLen = 256 << 10
)

// App is an Omaha application: one OS image line with its own trust root.
type App struct {
	ID      string // lower-case UUID without braces
	Name    string
	Trust   []byte // the payload trust root, JSON; empty for an app that serves only Flatcar packages
	Created time.Time
}

// Package is one published payload file.
type Package struct {
	ID              int64
	AppID           string
	Version         string
	Board           string
	SecurityVersion uint64
	FileName        string
	Size            int64
	SHA256          string // hex
	SHA1            string // base64
	Path            string // where the server stores the file (relative to its store dir); "" if external
	URL             string // full download URL when the file lives elsewhere; "" if stored
	Withdrawn       bool
	Created         time.Time
	// Format is FormatTwinslot or FormatFlatcar.
	Format string
	// Extras are files served alongside (Flatcar's OEM and sysext images), from the same
	// place as the package: stored when it is stored, next to its URL when it is external.
	Extras []File
}

// Package formats: a signed twinslot payload, or update_engine's CrAU payload.
const (
	FormatTwinslot = "twinslot"
	FormatFlatcar  = "flatcar"
)

// File is an extra file of a package.
type File struct {
	Name   string
	Size   int64
	SHA256 string // hex
	SHA1   string // base64
	Path   string // where the server stores it (relative to its store dir); "" when the package is external
}

// Channel is a release channel of an app. Packages maps a board to the channel's current package.
type Channel struct {
	AppID       string
	Name        string
	ExternalURL string // base URL template for downloads ({board}, {version}, {sha256}); "" = serve ourselves
	Packages    map[string]Package
}

// Policy is a group's rollout policy.
type Policy struct {
	// Enabled is false when updates are paused for the group.
	Enabled bool
	// MaxUpdates caps how many hosts may be granted an update within Period; 0 = no cap.
	MaxUpdates int64
	Period     time.Duration
	// UpdateTimeout frees a granted slot when the host did not report installed (3/1) in time;
	// 0 = a grant holds its slot for the whole period.
	UpdateTimeout time.Duration
	// HaltOnFailures pauses the group (Enabled = false) when this many distinct hosts of it
	// reported a failed update or a rollback (event 3/0) for the version its channel currently
	// offers, counted from FailuresSince; 0 = never. See WriteCheckins.
	HaltOnFailures int64
	// HaltedReason says why the server halted the group, and HaltedAt when ("" and zero when it
	// was not halted by HaltOnFailures, or was re-enabled since).
	HaltedReason string
	HaltedAt     time.Time
	// FailuresSince is when the group was last re-enabled: failures before it are not counted
	// again. Set by UpdateGroup when Enabled goes from false to true.
	FailuresSince time.Time
	// DisablePayloadBackoff is sent to update_engine on each offer (postinstall action):
	// retry a failed download at the next check instead of backing off.
	DisablePayloadBackoff bool
	// Waves is the group's rollout in stages, as ParseWaves reads it ("1%:1h,10%:2h,100%");
	// "" = every host at once. See AdvanceWave.
	Waves string
	// OfficeHours are the windows in which hosts may be offered a new update, as
	// ParseOfficeHours reads them ("Mon-Fri 09:00-17:00 Europe/Berlin"); "" = any time.
	OfficeHours string
	// RequireEnrollment offers updates, spends the budget and counts failures only for hosts
	// that present the credential their enrollment gave them for their machine id (see
	// Enroll); other hosts get noupdate and their events are recorded without a target version,
	// so they never count toward HaltOnFailures. Anonymous can exempt Flatcar clients.
	RequireEnrollment bool
	// Anonymous says which unenrolled clients a group that requires enrollment still serves as
	// before: AnonymousNone (none) or AnonymousFlatcar (requests from update_engine, which
	// cannot enroll; they spend budget and count failures like enrolled hosts).
	Anonymous string
	// GrantStartTimeout frees a grant's slot when its host did not report download started
	// (13/1) within it: such a host can be granted again later. 0 = off (UpdateTimeout alone).
	GrantStartTimeout time.Duration
}

// Values of Policy.Anonymous. A group stores and reads AnonymousNone as "".
const (
	AnonymousNone    = "none"
	AnonymousFlatcar = "flatcar"
)

// Group is a set of hosts following one channel under one policy.
type Group struct {
	ID      string // UUID
	AppID   string
	Name    string
	Channel string
	Policy  Policy
	Created time.Time
	Updated time.Time
}

// Default reports whether g is the default group of its channel.
func (g Group) Default() bool { return g.Name == g.Channel }

// State is where an instance is in the update flow, as far as the server knows.
type State string

// Instance states.
const (
	StateIdle        State = "idle"        // checked in, nothing to offer (up to date, no package)
	StateOnHold      State = "onhold"      // an update exists but the group's policy holds it back
	StateGranted     State = "granted"     // offered an update
	StateDownloading State = "downloading" // reported 13/1
	StateDownloaded  State = "downloaded"  // reported 14/1
	StateInstalled   State = "installed"   // reported 3/1 (or 800/1), waiting for reboot
	StateComplete    State = "complete"    // checked in running the version it was granted
	StateError       State = "error"       // reported 3/0
	StateRolledBack  State = "rolledback"  // reported 3/0 with error code 44
)

// Instance is one machine running one app.
type Instance struct {
	AppID     string
	MachineID string
	Alias     string
	GroupID   string
	Track     string
	Version   string
	Board     string
	OEM       string
	BootID    string
	State     State
	LastError int64 // last error code reported (flags included), 0 = none
	FirstSeen time.Time
	LastCheck time.Time

	// The update this instance was last granted. A grant holds a slot of the group's
	// max-updates-per-period until it is older than the period, or until UpdateTimeout
	// passed without InstalledAt or FailedAt being set.
	GrantedVersion string
	GrantedAt      time.Time
	InstalledAt    time.Time
	FailedAt       time.Time
	// RollbackVersion is the version the host rolled back from (3/0/44); it is not offered again.
	RollbackVersion string
}

// Event is one event a host reported.
type Event struct {
	ID              int64
	AppID           string
	MachineID       string
	GroupID         string
	Type            int
	Result          int
	ErrorCode       int64
	Version         string // the version the host ran when it reported
	PreviousVersion string
	TargetVersion   string // the version it was granted, while outstanding or by the 3/2 that completes it: what a failure, rollback or commit is about
	At              time.Time
}

// DB is a store on SQLite or PostgreSQL. It is safe for concurrent use.
type DB struct {
	w, r   *sql.DB // writer and reader pools; the same pool on PostgreSQL
	d      dialect
	values valuesSQL
	stmts  sync.Map // query text → *sql.Stmt on w (hot statements, parsed once per connection)
	rstmts sync.Map // the same on r
	// closeCheckpointer stops SQLite's checkpointer (nil on PostgreSQL).
	closeCheckpointer func() error
}

// stmt returns a prepared statement for a hot query on the writer (or, with read, the reader)
// pool. database/sql prepares it once per connection and keeps it.
func (db *DB) stmt(ctx context.Context, read bool, query string) (*sql.Stmt, error) {
	m, pool := &db.stmts, db.w
	if read {
		m, pool = &db.rstmts, db.r
	}
	if s, ok := m.Load(query); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := pool.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := m.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

// txStmt returns the hot statement query bound to tx. The writer statements must have been
// prepared by prepareWrites: preparing needs a connection of its own, and SQLite's writer
// pool has one, held by tx.
func (db *DB) txStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	s, ok := db.stmts.Load(query)
	if !ok {
		return nil, fmt.Errorf("statement not prepared at open: %.60s", query)
	}
	return tx.StmtContext(ctx, s.(*sql.Stmt)), nil
}

// dialect holds what differs between the backends.
type dialect struct {
	name      string
	autoID    string // DDL of an auto-increment primary key column
	clustered string // table option: rows stored in primary key order
	forUpdate string // row lock suffix for SELECT inside a write transaction
	lockMigr  string // statement that serialises migrations across processes ("" if not needed)
	lower     string // SQL function that lower-cases any text as strings.ToLower does
}

// Open opens (creating if needed) the database named by dsn and applies missing migrations.
// dsn is a postgres:// URL or a SQLite file path.
func Open(ctx context.Context, dsn string) (*DB, error) {
	return open(ctx, dsn, SchemaVersion())
}

// open opens dsn and applies the migrations up to version upto (tests of an upgrade stop
// early); only a database at SchemaVersion gets its statements prepared.
func open(ctx context.Context, dsn string, upto int) (*DB, error) {
	var (
		db  *DB
		err error
	)
	if IsPostgres(dsn) {
		db, err = openPostgres(ctx, dsn)
	} else {
		db, err = openSQLite(ctx, dsn)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx, upto); err != nil {
		db.Close()
		return nil, err
	}
	if upto < SchemaVersion() {
		return db, nil
	}
	if err := db.prepareWrites(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// IsPostgres reports whether dsn names a PostgreSQL database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Backend returns "sqlite" or "postgres".
func (db *DB) Backend() string { return db.d.name }

// Close closes the connection pools.
func (db *DB) Close() error {
	for _, m := range []*sync.Map{&db.stmts, &db.rstmts} {
		m.Range(func(_, s any) bool { s.(*sql.Stmt).Close(); return true })
	}
	var err error
	if db.closeCheckpointer != nil {
		err = db.closeCheckpointer()
	}
	err = errors.Join(err, db.w.Close())
	if db.r != db.w {
		err = errors.Join(err, db.r.Close())
	}
	return err
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// tx runs fn in a write transaction and commits when fn returns nil.
func (db *DB) tx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %s: begin: %w", op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrEnrollRefused) || errors.As(err, new(*GateError)) {
			return err
		}
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %s: commit: %w", op, err)
	}
	return nil
}

// bumpCatalog records that apps, channels, packages or groups changed.
func bumpCatalog(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, `UPDATE meta SET value = value + 1 WHERE key = 'catalog'`)
	return err
}

// CatalogVersion returns a number that changes whenever apps, channels, packages or groups change.
func (db *DB) CatalogVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := db.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'catalog'`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: catalog version: %w", err)
	}
	return v, nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// NewUUID returns a random (version 4) UUID in its lower-case text form.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// IsUUID reports whether s is a UUID in lower-case text form without braces.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// checkText validates a short human string: non-empty when required, bounded, printable.
func checkText(what, s string, max int, required bool) error {
	if required && s == "" {
		return invalidf("%s is empty", what)
	}
	if len(s) > max {
		return invalidf("%s is longer than %d bytes", what, max)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return invalidf("%s contains a control character", what)
		}
	}
	return nil
}
