package omahatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// Server is a running in-process omahad.
type Server struct {
	URL           string // base URL, http://127.0.0.1:port
	UpdateURL     string // the Omaha endpoint, URL + "/v1/update/"
	AdminToken    string
	ReadOnlyToken string
	// App is the app the helpers act on: the last one CreateApp made (initially the default
	// twinslot app id).
	App      string
	StoreDir string
	DB       *store.DB
	Server   *server.Server
	Admin    *admin.Client // authenticated with AdminToken
	HTTP     *httptest.Server
}

type options struct {
	dsn    string
	config func(*server.Config)
	log    io.Writer
}

// Option changes how New starts the server.
type Option func(*options)

// WithDSN uses this database instead of a fresh SQLite file (see PostgresDSN).
func WithDSN(dsn string) Option { return func(o *options) { o.dsn = dsn } }

// WithConfig lets a test change the server configuration (clock, flush interval, …) before
// the server starts.
func WithConfig(f func(*server.Config)) Option { return func(o *options) { o.config = f } }

// WithLog sends the server's logs (text, debug level) to w.
func WithLog(w io.Writer) Option { return func(o *options) { o.log = w } }

// New starts a server and registers its shutdown with t.Cleanup.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	dir := t.TempDir()
	if o.dsn == "" {
		o.dsn = filepath.Join(dir, "omahad.db")
	}
	db, err := store.Open(t.Context(), o.dsn)
	if err != nil {
		t.Fatalf("omahatest: open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := server.Config{DB: db, StoreDir: filepath.Join(dir, "payloads")}
	if o.log != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(o.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.config != nil {
		o.config(&cfg)
	}
	srv, err := server.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("omahatest: start server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	// Cleanups run last-in first-out: stop serving, then flush, then close the database.
	t.Cleanup(func() {
		// t.Context() is already cancelled when cleanups run.
		if err := srv.Close(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("omahatest: close server: %v", err)
		}
	})
	t.Cleanup(hs.Close)
	s := &Server{URL: hs.URL, UpdateURL: hs.URL + "/v1/update/", App: payload.DefaultAppID, StoreDir: cfg.StoreDir,
		DB: db, Server: srv, HTTP: hs}
	if s.AdminToken, _, err = db.CreateToken(t.Context(), store.RoleAdmin, "omahatest admin", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s.ReadOnlyToken, _, err = db.CreateToken(t.Context(), store.RoleReadOnly, "omahatest readonly", time.Now()); err != nil {
		t.Fatal(err)
	}
	if s.Admin, err = admin.NewClient(hs.URL, s.AdminToken, hs.Client()); err != nil {
		t.Fatal(err)
	}
	return s
}

// PostgresDSN returns the DSN of a fresh, empty schema on the PostgreSQL server named by
// TWINSLOT_TEST_POSTGRES, dropped at cleanup; the test is skipped when that is not set.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("TWINSLOT_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("TWINSLOT_TEST_POSTGRES is not set: skipping the PostgreSQL run (set it to a postgres:// DSN; .ci/run does)")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("TWINSLOT_TEST_POSTGRES: %v", err)
	}
	db := stdlib.OpenDB(*cfg)
	t.Cleanup(func() { db.Close() })
	var b [6]byte
	rand.Read(b[:])
	schema := "omahatest_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("TWINSLOT_TEST_POSTGRES: create schema: %v", err)
	}
	t.Cleanup(func() { db.Exec("DROP SCHEMA " + schema + " CASCADE") })
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("TWINSLOT_TEST_POSTGRES: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// CreateApp creates an app (channels alpha, beta, stable and their default groups) with a trust
// root and makes it the app the other helpers use. id is a bare or braced UUID.
func (s *Server) CreateApp(t testing.TB, id string, trust *payload.TrustRoot) admin.App {
	t.Helper()
	b, err := trust.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Admin.CreateApp(t.Context(), admin.App{ID: id, Name: "app " + id, Trust: b})
	if err != nil {
		t.Fatalf("omahatest: create app: %v", err)
	}
	s.App = a.ID
	return a
}

// BuildPayload builds a payload of version for s.App (board amd64-usr, security version 1)
// from a small deterministic image, signs it with keys and returns its path.
func (s *Server) BuildPayload(t testing.TB, version string, keys ...*payloadtest.Key) string {
	t.Helper()
	o := payloadtest.Options(version)
	o.AppID = s.App
	out := filepath.Join(t.TempDir(), "update-"+version+".tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(256<<10, uint64(len(version))), out, o, keys...)
	return out
}

// Publish uploads the payload at path to s.App and points channel at it ("" = publish only).
func (s *Server) Publish(t testing.TB, channel, path string) admin.Package {
	t.Helper()
	p, err := s.TryPublish(t, channel, path)
	if err != nil {
		t.Fatalf("omahatest: publish %s: %v", path, err)
	}
	return p
}

// TryPublish is Publish returning the error (for tests of refused uploads).
func (s *Server) TryPublish(t testing.TB, channel, path string) (admin.Package, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return s.Admin.Publish(t.Context(), s.App, f, st.Size(), admin.PublishOptions{Channel: channel, Name: filepath.Base(path)})
}

// Promote points channel to at the packages of version that channel from carries.
func (s *Server) Promote(t testing.TB, version, from, to string) []admin.Package {
	t.Helper()
	ps, err := s.Admin.Promote(t.Context(), s.App, admin.Promote{Version: version, From: from, To: to})
	if err != nil {
		t.Fatalf("omahatest: promote %s %s→%s: %v", version, from, to, err)
	}
	return ps
}

// CreateGroup creates a group of s.App following channel under policy p.
func (s *Server) CreateGroup(t testing.TB, name, channel string, p admin.Policy) admin.Group {
	t.Helper()
	g, err := s.Admin.CreateGroup(t.Context(), s.App, admin.Group{Name: name, Channel: channel, Policy: p})
	if err != nil {
		t.Fatalf("omahatest: create group %s: %v", name, err)
	}
	return g
}

// UpdateGroup changes a group (by id or name) of s.App.
func (s *Server) UpdateGroup(t testing.TB, group string, c admin.GroupChange) admin.Group {
	t.Helper()
	g, err := s.Admin.UpdateGroup(t.Context(), s.App, group, c)
	if err != nil {
		t.Fatalf("omahatest: update group %s: %v", group, err)
	}
	return g
}

// Flush writes the check-ins and events the server still has queued.
func (s *Server) Flush(t testing.TB) {
	t.Helper()
	if err := s.Server.Flush(t.Context()); err != nil {
		t.Fatalf("omahatest: flush: %v", err)
	}
}

// Instances returns every host of s.App.
func (s *Server) Instances(t testing.TB) []admin.Instance {
	t.Helper()
	s.Flush(t)
	ins, err := s.Admin.Instances(t.Context(), s.App, admin.InstanceQuery{Limit: store.MaxLimit})
	if err != nil {
		t.Fatalf("omahatest: instances: %v", err)
	}
	return ins
}

// Instance returns one host of s.App, failing the test when it is unknown.
func (s *Server) Instance(t testing.TB, machineID string) admin.Instance {
	t.Helper()
	for _, in := range s.Instances(t) {
		if in.MachineID == machineID {
			return in
		}
	}
	t.Fatalf("omahatest: no instance %s", machineID)
	return admin.Instance{}
}

// Events returns the events a host of s.App reported, oldest first.
func (s *Server) Events(t testing.TB, machineID string) []admin.Event {
	t.Helper()
	s.Flush(t)
	evs, err := s.Admin.MachineEvents(t.Context(), s.App, machineID, store.MaxLimit)
	if err != nil {
		t.Fatalf("omahatest: events of %s: %v", machineID, err)
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

// Status returns s.App's status (channels, per-group counts and failures).
func (s *Server) Status(t testing.TB) admin.Status {
	t.Helper()
	s.Flush(t)
	st, err := s.Admin.Status(t.Context(), s.App)
	if err != nil {
		t.Fatalf("omahatest: status: %v", err)
	}
	return st
}

// Post sends an Omaha request body and returns the status code and response body.
func (s *Server) Post(t testing.TB, body []byte) (int, []byte) {
	t.Helper()
	return s.PostAs(t, body, "")
}

// PostAs is Post with a host credential sent as "Authorization: Bearer <credential>" ("" sends none).
func (s *Server) PostAs(t testing.TB, body []byte, credential string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.UpdateURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/xml")
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		t.Fatalf("omahatest: post: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// NewMachineID returns a random machine id (32 lower-case hex digits).
func NewMachineID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
