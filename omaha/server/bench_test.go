package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// benchChecks is how many update checks one op of BenchmarkUpdateCheck sends.
const benchChecks = 20000

// BenchmarkUpdateCheck measures the server's own cost of routine update checks (ping +
// updatecheck + 3/2, answered noupdate, instance and event recorded and flushed) by calling
// the handler directly, without a network or a client: 10,000 registered hosts, one op =
// benchChecks checks from 16 goroutines. It reports checks/s and the process's CPU time per
// check (user + system, all goroutines: the measure that does not depend on what else runs on
// the machine).
// The end-to-end loopback benchmark with latencies is BenchmarkServer in omaha/omahaload.
// The -enrolled runs have every group require enrollment and every host send its credential.
func BenchmarkUpdateCheck(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		for _, enrolled := range []bool{false, true} {
			name := backend
			if enrolled {
				name += "-enrolled"
			}
			b.Run(name, func(b *testing.B) {
				dsn := filepath.Join(b.TempDir(), "o.db")
				if backend == "postgres" {
					dsn = omahatest.PostgresDSN(b) // skips without TWINSLOT_TEST_POSTGRES
				}
				benchUpdateCheck(b, dsn, 10000, enrolled)
			})
		}
	}
}

func benchUpdateCheck(b *testing.B, dsn string, machines int, enrolled bool) {
	ctx := b.Context()
	db, err := store.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tr, _ := payloadtest.TrustRoot(b, 1, 0, payloadtest.NewKey(b, "")).Marshal()
	if err := db.CreateApp(ctx, store.App{ID: payload.DefaultAppID, Name: "bench", Trust: tr}, time.Now()); err != nil {
		b.Fatal(err)
	}
	creds := make([]string, machines)
	if enrolled {
		creds = enrollAll(b, db, machines)
	}
	srv, err := server.New(ctx, server.Config{DB: db, StoreDir: filepath.Join(b.TempDir(), "p")})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close(ctx)
	h := srv.Handler()
	bodies := make([][]byte, machines)
	for i := range bodies {
		bodies[i] = []byte(strings.NewReplacer("APPID", payload.DefaultAppID, "TRACK", []string{"stable", "beta", "alpha"}[i%3],
			"MACHINE", fmt.Sprintf("%032x", i+1)).Replace(goodCheck))
	}
	post := func(i int) {
		req := httptest.NewRequest(http.MethodPost, "/v1/update/", bytes.NewReader(bodies[i%machines]))
		if c := creds[i%machines]; c != "" {
			req.Header.Set("Authorization", "Bearer "+c)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	for i := range machines { // register every host once
		post(i)
	}
	if err := srv.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for range b.N {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for i := next.Add(1); i <= benchChecks; i = next.Add(1) {
					post(int(i))
				}
			})
		}
		wg.Wait()
		if err := srv.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.ReportMetric(float64(b.N*benchChecks)/el.Seconds(), "checks/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*benchChecks), "cpu-µs/check")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is the user + system CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// enrollAll makes every group of the bench app require enrollment and enrolls machines
// 1..n, returning their credentials.
func enrollAll(b *testing.B, db *store.DB, n int) []string {
	ctx, now := b.Context(), time.Now()
	gs, err := db.Groups(ctx, payload.DefaultAppID)
	if err != nil {
		b.Fatal(err)
	}
	for _, g := range gs {
		if _, err := db.UpdateGroup(ctx, g.AppID, g.ID, func(g *store.Group) { g.Policy.RequireEnrollment = true }, now); err != nil {
			b.Fatal(err)
		}
	}
	tok, _, err := db.CreateEnrollToken(ctx, store.EnrollToken{AppID: payload.DefaultAppID}, now)
	if err != nil {
		b.Fatal(err)
	}
	creds := make([]string, n)
	for i := range creds {
		if creds[i], _, err = db.Enroll(ctx, tok, "", fmt.Sprintf("%032x", i+1), now); err != nil {
			b.Fatal(err)
		}
	}
	return creds
}
