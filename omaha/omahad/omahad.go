package omahad

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/tools/cli"
)

const summary = "the twinslot Omaha update server"

// Env is what omahad takes from the process environment; main fills it.
type Env struct {
	// GOGC is the GOGC environment variable: when empty, serve runs the collector at
	// DefaultGCPercent (see SetGCPercent).
	GOGC string
}

// Main is omahad's command line with an empty environment (Env.Main).
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is omahad's command line: with no command (or "serve") it serves; "token create|list|
// revoke" manage admin API tokens; "migrate" brings a database schema up to date. It returns
// the exit code: 0 success, 1 failure, 2 usage error.
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	stdio := cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" && args[0] != "-help" {
		args = append([]string{"serve"}, args...)
	}
	cmds := []cli.Command{
		{Name: "serve", Summary: "serve Omaha, payload downloads, the admin API, the dashboard and metrics (the default)", Run: env.serve},
		{Name: "token", Summary: "manage admin API tokens", Sub: []cli.Command{
			{Name: "create", Summary: "create a token and print it (shown once)", Run: tokenCreate},
			{Name: "list", Summary: "list tokens (without secrets)", Run: tokenList},
			{Name: "revoke", Summary: "revoke a token by id", Run: tokenRevoke},
		}},
		{Name: "migrate", Summary: "apply database migrations and print the schema version", Run: migrate},
	}
	return cli.Run(ctx, "omahad", summary, cmds, args, stdio)
}

func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", "omahad.db", "database: a SQLite file path, or a postgres:// URL")
}

// withDB parses the flags of a maintenance command (which takes nargs arguments, described by
// what), runs check (if not nil) so that a usage error touches nothing, then opens the database
// and runs fn with it and the arguments.
func withDB(ctx context.Context, fs *flag.FlagSet, dsn *string, args []string, nargs int, what string, check func() error, fn func(*store.DB, []string) error) error {
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(rest, nargs, nargs, what); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	db, err := store.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db, rest)
}

func (env Env) serve(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahad serve", "[flags]", `Serve the Omaha endpoint (/v1/update/), payload downloads (/packages/), the admin API
(/api/v1/), the dashboard (/), /metrics and /healthz until interrupted, then shut down gracefully:
in-flight requests finish and queued check-ins are written. The garbage collector runs with
GOGC=`+strconv.Itoa(DefaultGCPercent)+` unless GOGC is set (more memory for less CPU; GOMEMLIMIT caps the heap).

`+server.LimitsHelp())
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	dsn := dbFlag(fs)
	storeDir := fs.String("store", "payloads", "directory for published payload files")
	public := fs.String("public-url", "", "base URL hosts reach this server at (for download URLs); default: from each request")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	flush := fs.Duration("flush-interval", server.DefaultFlushInterval, "group commit: longest wait before check-ins are written")
	batch := fs.Int("batch-rows", server.DefaultBatchRows, "group commit: rows per write transaction")
	queue := fs.Int("queue-rows", server.DefaultQueueRows, "group commit: rows queued before requests wait")
	poll := fs.Duration("cache-poll", server.DefaultCachePoll, "how often to look for catalog changes by other replicas")
	instCache := fs.Int("instance-cache", server.DefaultInstanceCache,
		"instance rows kept in memory so update checks read no database; -1 = none (use -1 for replicas without per-machine routing)")
	maxUpload := fs.Int64("max-upload", server.DefaultMaxUploadBytes, "largest payload upload in bytes")
	retention := fs.Duration("event-retention", server.DefaultEventRetention, "how long to keep host events (negative: forever)")
	autoEvery := fs.Duration("auto-promote-every", server.DefaultAutoPromoteEvery, "how often to evaluate automatic promotion gates (negative: never, on this replica)")
	wavesEvery := fs.Duration("advance-waves-every", server.DefaultAdvanceWavesEvery, "how often to open the next wave of groups rolling out in waves (negative: never, on this replica)")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "how long shutdown waits for requests and the last writes")
	maxConns := fs.Int("max-conns-per-client", server.DefaultMaxConnsPerClient,
		"open connections one client IP address may hold; more are answered 503 (-1: no cap, behind a proxy that caps)")
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(rest, 0, 0, "no arguments"); err != nil {
		return err
	}
	log, err := newLogger(stdio.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	defer SetGCPercent(env.GOGC)()
	db, err := store.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := server.New(ctx, server.Config{
		DB: db, StoreDir: *storeDir, PublicURL: *public, Logger: log,
		FlushInterval: *flush, BatchRows: *batch, QueueRows: *queue, CachePoll: *poll, InstanceCache: *instCache,
		MaxUploadBytes: *maxUpload, EventRetention: *retention, MaxConnsPerClient: *maxConns, AutoPromoteEvery: *autoEvery,
		AdvanceWavesEvery: *wavesEvery,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		s.Close(ctx)
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	log.Info("omahad listening", "addr", ln.Addr().String(), "db", db.Backend(), "store", *storeDir)
	return s.Serve(ctx, ln, *grace)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, cli.Usagef("--log-format %q: want text or json", format)
}

func tokenCreate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahad token create", "--role admin|readonly [--name N] [--db DSN]",
		"Create an admin API token and print it on stdout. Only its hash is stored: keep it safe.")
	dsn := dbFlag(fs)
	role := fs.String("role", "", "admin (everything) or readonly (reads only)")
	name := fs.String("name", "", "what the token is for (shown by 'token list')")
	var r store.Role
	check := func() (err error) {
		if r, err = store.ParseRole(*role); err != nil {
			return cli.Usagef("--role %q: want admin or readonly", *role)
		}
		return nil
	}
	return withDB(ctx, fs, dsn, args, 0, "no arguments", check, func(db *store.DB, _ []string) error {
		secret, tok, err := db.CreateToken(ctx, r, *name, time.Now())
		if err != nil {
			return err
		}
		localAudit(ctx, stdio, db, "token.create", tok.ID, map[string]any{"role": tok.Role, "name": tok.Name})
		_, err = fmt.Fprintln(stdio.Stdout, secret)
		return err
	})
}

// localAudit records a change made with omahad's own commands on the database (who: "omahad
// command", from: "local"); a failure to record is reported on stderr, the change stands.
func localAudit(ctx context.Context, stdio cli.IO, db *store.DB, action, tokenID string, detail map[string]any) {
	b, _ := json.Marshal(detail)
	if detail == nil {
		b = []byte("{}")
	}
	e := store.AuditEntry{At: time.Now(), Who: "omahad command", Remote: "local", Action: action, Target: "tokens/" + tokenID, Detail: b}
	if _, err := db.AddAudit(ctx, e); err != nil {
		fmt.Fprintf(stdio.Stderr, "omahad: warning: %s done but not recorded in the audit log: %v\n", action, err)
	}
}

func tokenList(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahad token list", "[--db DSN] [--json]", "List admin API tokens (ids, roles, names; never secrets).")
	dsn := dbFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	return withDB(ctx, fs, dsn, args, 0, "no arguments", nil, func(db *store.DB, _ []string) error {
		toks, err := db.Tokens(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return cli.PrintJSON(stdio.Stdout, toks)
		}
		tw := cli.Table(stdio.Stdout)
		fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Name, t.Created.Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func tokenRevoke(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahad token revoke", "[--db DSN] ID", "Revoke a token; requests using it are refused from then on.")
	dsn := dbFlag(fs)
	return withDB(ctx, fs, dsn, args, 1, "a token id (see 'omahad token list')", nil, func(db *store.DB, rest []string) error {
		if err := db.DeleteToken(ctx, rest[0]); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no token %s (see 'omahad token list')", rest[0])
			}
			return err
		}
		localAudit(ctx, stdio, db, "token.revoke", rest[0], nil)
		_, err := fmt.Fprintf(stdio.Stdout, "revoked %s\n", rest[0])
		return err
	})
}

func migrate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("omahad migrate", "[--db DSN]", "Create or upgrade the database schema (omahad serve does this too) and print its version.")
	dsn := dbFlag(fs)
	return withDB(ctx, fs, dsn, args, 0, "no arguments", nil, func(db *store.DB, _ []string) error {
		_, err := fmt.Fprintf(stdio.Stdout, "schema version %d (%s)\n", store.SchemaVersion(), db.Backend())
		return err
	})
}
