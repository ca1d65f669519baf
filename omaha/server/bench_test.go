package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// BenchmarkUpdateCheck measures the server's own cost of one routine update check (ping +
// updatecheck + 3/2, answered noupdate, instance and event recorded) by calling the handler
// directly, without a network or a client: machines hosts, requests spread over them, all
// goroutines of RunParallel. The end-to-end loopback benchmark with latencies is in
// omaha/omahaload.
func BenchmarkUpdateCheck(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			dsn := filepath.Join(b.TempDir(), "o.db")
			if backend == "postgres" {
				dsn = omahatest.PostgresDSN(b) // skips without TWINSLOT_TEST_POSTGRES
			}
			benchUpdateCheck(b, dsn, 10000)
		})
	}
}

func benchUpdateCheck(b *testing.B, dsn string, machines int) {
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
	start := time.Now()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post(int(next.Add(1)))
		}
	})
	if err := srv.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "checks/s")
}
