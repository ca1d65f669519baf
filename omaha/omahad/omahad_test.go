package omahad_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahad"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/store"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := omahad.Main(t.Context(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestMainTokens(t *testing.T) {
	db := filepath.Join(t.TempDir(), "o.db")
	if code, _, _ := run(t, "token", "create", "--db", db, "--role", "root"); code != 2 {
		t.Fatalf("bad role: exit %d", code)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a usage error created the database: %v", err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // regexp
	}{
		{"no role", []string{"token", "create", "--db", db}, 2, ""},
		{"bad role", []string{"token", "create", "--db", db, "--role", "root"}, 2, ""},
		{"extra arg", []string{"token", "create", "--db", db, "--role", "admin", "x"}, 2, ""},
		{"revoke unknown", []string{"token", "revoke", "--db", db, "nope"}, 1, ""},
		{"bad command", []string{"tokens"}, 2, ""},
		{"help", []string{"--help"}, 0, "token"},
		{"admin", []string{"token", "create", "--db", db, "--role", "admin", "--name", "ci"}, 0, `^tst_[0-9a-f]{12}_\S{43}\n$`},
		{"readonly", []string{"token", "create", "--db", db, "--role", "readonly"}, 0, `^tst_`},
		{"list", []string{"token", "list", "--db", db}, 0, `admin\s+ci`},
		{"migrate", []string{"migrate", "--db", db}, 0, `schema version \d+ \(sqlite\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != tc.code || !regexp.MustCompile(tc.out).MatchString(out) {
				t.Fatalf("exit %d (want %d)\nstdout %q\nstderr %q", code, tc.code, out, errs)
			}
		})
	}
	// Usage errors touched nothing: the first successful command created the database.
	// The token works against the database it was made for.
	_, out, _ := run(t, "token", "create", "--db", db, "--role", "admin")
	sdb, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	tok, err := sdb.Authenticate(t.Context(), strings.TrimSpace(out))
	if err != nil || tok.Role != store.RoleAdmin {
		t.Fatalf("printed token does not authenticate: %+v %v", tok, err)
	}
	// Token changes made on the database are in the audit log, the refused ones not.
	if code, _, errs := run(t, "token", "revoke", "--db", db, tok.ID); code != 0 {
		t.Fatalf("revoke: exit %d %s", code, errs)
	}
	es, err := sdb.Audit(t.Context(), store.AuditFilter{Target: "tokens"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Action+" "+e.Who+" "+e.Remote)
	}
	if len(es) != 4 || got[0] != "token.revoke omahad command local" || es[0].Target != "tokens/"+tok.ID || got[3] != "token.create omahad command local" {
		t.Fatalf("audit of token changes: %q", got)
	}
}

// TestMainServe starts omahad on a loopback port, checks /healthz, and stops it by cancelling.
func TestMainServe(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	var logs omahatest.SyncBuffer
	done := make(chan int)
	go func() {
		done <- omahad.Main(ctx, []string{"--listen", "127.0.0.1:0", "--db", filepath.Join(dir, "o.db"), "--store", filepath.Join(dir, "p"),
			"--log-format", "json", "--shutdown-grace", "5s"}, strings.NewReader(""), io.Discard, &logs)
	}()
	re := regexp.MustCompile(`"addr":"(127\.0\.0\.1:\d+)"`)
	var addr string
	for addr == "" {
		select {
		case code := <-done:
			t.Fatalf("omahad exited %d: %s", code, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		}
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("omahad exited %d after cancel: %s", code, logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Fatalf("no shutdown log: %s", logs.String())
	}
}

// TestSetGCPercent checks omahad's collector default applies only when GOGC chose nothing, and
// that restore puts the previous setting back.
func TestSetGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	restore := omahad.SetGCPercent("")
	if got := debug.SetGCPercent(omahad.DefaultGCPercent); got != omahad.DefaultGCPercent {
		t.Errorf("with GOGC unset the collector runs at %d, want %d", got, omahad.DefaultGCPercent)
	}
	restore()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after restore the collector runs at %d, want 100", got)
	}

	debug.SetGCPercent(150)
	omahad.SetGCPercent("150")()
	if got := debug.SetGCPercent(150); got != 150 {
		t.Errorf("with GOGC=150 set the collector was changed to %d", got)
	}
}
