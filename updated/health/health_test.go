package health

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// probe is a scripted systemd: it returns states[i] on call i (the last one repeats).
type probe struct {
	mu     sync.Mutex
	states []string
	err    error
	failed []string
	calls  int
}

func (p *probe) SystemState(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.err != nil {
		return "", p.err
	}
	i := min(p.calls-1, len(p.states)-1)
	return p.states[i], nil
}

func (p *probe) FailedUnits(context.Context) ([]string, error) { return p.failed, nil }

func script(t *testing.T, dir, name, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestGateFails(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	for _, tc := range []struct {
		name       string
		gate       func(dir string) *Gate
		wantReason string
		wantDetail string
		maxCalls   int // of the probe, when bounded
	}{
		{"degraded fails at once", func(string) *Gate {
			return &Gate{System: &probe{states: []string{"starting", "degraded"}, failed: []string{"app.service", "db.service"}}}
		}, "systemd failed", "failed units: app.service, db.service", 2},
		{"never running", func(string) *Gate {
			return &Gate{System: &probe{states: []string{"starting"}}, Deadline: time.Minute, Retry: 10 * time.Second}
		}, "deadline of 1m0s passed", "system is starting", 7},
		{"probe errors are failures", func(string) *Gate {
			return &Gate{System: &probe{err: errors.New("no bus")}, Deadline: time.Minute}
		}, "deadline", "no bus", 0},
		{"script fails", func(dir string) *Gate {
			script(t, dir, "10-app", "echo checking; echo app not ready >&2; exit 3", 0o755)
			return &Gate{System: &probe{states: []string{"running"}}, Dir: dir, Deadline: 30 * time.Second}
		}, "deadline", "exit status 3: app not ready", 0},
		{"url fails", func(string) *Gate {
			return &Gate{URLs: []string{bad.URL + "/healthz"}, Deadline: 20 * time.Second}
		}, "deadline", "HTTP 503", 0},
		{"bad url fails at once", func(string) *Gate {
			return &Gate{URLs: []string{"http://[::1"}}
		}, "failed", "bad URL", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			g := tc.gate(dir)
			var res Result
			synctest.Test(t, func(t *testing.T) { res = g.Run(t.Context()) })
			if res.Passed {
				t.Fatalf("gate passed: %+v", res)
			}
			if !strings.Contains(res.Reason, tc.wantReason) || !strings.Contains(res.Summary(), tc.wantDetail) {
				t.Fatalf("reason %q summary %q; want %q and %q", res.Reason, res.Summary(), tc.wantReason, tc.wantDetail)
			}
			if p, ok := g.System.(*probe); ok && tc.maxCalls > 0 && p.calls > tc.maxCalls {
				t.Fatalf("probe called %d times, want at most %d", p.calls, tc.maxCalls)
			}
			if res.Elapsed > orDefault(g.Deadline, DefaultDeadline) {
				t.Fatalf("gate ran %v, past its deadline", res.Elapsed)
			}
		})
	}
}

func TestGatePasses(t *testing.T) {
	var hits int
	var mu sync.Mutex
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if hits < 2 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer ok.Close()
	dir := t.TempDir()
	counter := filepath.Join(t.TempDir(), "n")
	// Passes on its third run: a check may wait for a service.
	script(t, dir, "20-slow", `n=$(cat `+counter+` 2>/dev/null || echo 0); n=$((n+1)); echo $n > `+counter+`; [ $n -ge 3 ]`, 0o755)
	script(t, dir, "10-env", `[ "$TWINSLOT_VERSION" = 2.0.0 ]`, 0o755)
	script(t, dir, "30-not-executable", "exit 1", 0o644)
	script(t, dir, ".hidden", "exit 1", 0o755)
	script(t, dir, "40-backup~", "exit 1", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "50-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := &probe{states: []string{"initializing", "starting", "running"}}
	g := &Gate{System: p, Dir: dir, URLs: []string{ok.URL}, Env: []string{"TWINSLOT_VERSION=2.0.0"}, Retry: time.Second}
	var res Result
	synctest.Test(t, func(t *testing.T) { res = g.Run(t.Context()) })
	if !res.Passed {
		t.Fatalf("gate failed: %s", res.Summary())
	}
	var names []string
	attempts := map[string]int{}
	for _, c := range res.Checks {
		names = append(names, c.Name)
		attempts[c.Name] = c.Attempts
	}
	want := []string{"systemd", "health.d/10-env", "health.d/20-slow", "url " + ok.URL}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("checks %v, want %v", names, want)
	}
	if attempts["systemd"] != 3 || attempts["health.d/20-slow"] != 3 || attempts["health.d/10-env"] != 1 || attempts["url "+ok.URL] != 2 {
		t.Fatalf("attempts %v", attempts)
	}
}

func TestGateInterrupted(t *testing.T) {
	g := &Gate{System: &probe{states: []string{"starting"}}}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		res := g.Run(ctx)
		if res.Passed || !strings.Contains(res.Reason, "interrupted") {
			t.Fatalf("result %+v", res)
		}
	})
}

// A gate run again after its process restarted gets what is left of its deadline after Used:
// it fails at once (without running a check, even one that would pass) when nothing is, and
// never gets more than Deadline.
func TestGateUsed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		used        time.Duration
		state       string // of the probe
		wantElapsed time.Duration
		wantReason  string
		wantCalls   int // of the probe; -1: any
	}{
		{"deadline passed before the restart", 61 * time.Second,
			"running", 0, "deadline of 1m0s passed with 1 checks not passing (the gate started 1m1s ago, before a restart)", 0},
		{"deadline passed just now", time.Minute, "starting", 0, "deadline of 1m0s passed", 0},
		{"absurdly long ago", math.MaxInt64, "running", 0, "deadline of 1m0s passed", 0},
		{"part of the deadline left", 40 * time.Second,
			"starting", 20 * time.Second, "deadline of 1m0s passed with 1 checks not passing", -1},
		{"negative counts as none", -time.Hour, "starting", time.Minute, "deadline of 1m0s passed with 1 checks not passing", -1},
		{"none", 0, "starting", time.Minute, "deadline of 1m0s passed with 1 checks not passing", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &probe{states: []string{tc.state}}
			var res Result
			synctest.Test(t, func(t *testing.T) {
				g := &Gate{System: p, Deadline: time.Minute, Retry: 10 * time.Second, Used: tc.used}
				res = g.Run(t.Context())
			})
			if res.Passed || res.Reason != tc.wantReason && !strings.HasPrefix(res.Reason, tc.wantReason) {
				t.Fatalf("result %+v; want a failure %q", res, tc.wantReason)
			}
			if res.Elapsed != tc.wantElapsed {
				t.Fatalf("the gate ran %v, want %v", res.Elapsed, tc.wantElapsed)
			}
			if tc.wantCalls >= 0 && p.calls != tc.wantCalls {
				t.Fatalf("probe called %d times, want %d", p.calls, tc.wantCalls)
			}
			if tc.wantCalls == 0 && !strings.Contains(res.Summary(), "systemd: not run") {
				t.Fatalf("summary %q does not say the check was not run", res.Summary())
			}
		})
	}
}

func TestGateNoChecks(t *testing.T) {
	res := (&Gate{Dir: filepath.Join(t.TempDir(), "missing")}).Run(t.Context())
	if !res.Passed || len(res.Checks) != 0 {
		t.Fatalf("an empty gate: %+v", res)
	}
}

func TestTail(t *testing.T) {
	w := &tail{max: 4}
	w.Write([]byte("abc"))
	w.Write([]byte("defg"))
	if w.String() != "defg" {
		t.Fatalf("tail = %q", w.String())
	}
}
