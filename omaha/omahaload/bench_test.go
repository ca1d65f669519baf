package omahaload_test

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" driver, to measure the server's database file

	"github.com/twinslot/twinslot/omaha/omahad"
	"github.com/twinslot/twinslot/omaha/omahaload"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

var (
	benchMachines = flag.Int("omahaload.machines", 100_000, "BenchmarkServer: simulated hosts (-short: 2000)")
	benchRounds   = flag.Int("omahaload.rounds", 2, "BenchmarkServer: requests per host (the first round is one check each)")
	// 32 in flight, omahaload's own default: enough to hold a 2-core omahad at its throughput
	// ceiling. More in flight adds no checks/s, only queueing (64 gave the same rate with twice
	// the p99), so latency is measured where the server is saturated but not overrun.
	benchConcurrency = flag.Int("omahaload.concurrency", 32, "BenchmarkServer: requests in flight")
	benchRate        = flag.Float64("omahaload.rate", 0, "BenchmarkServer: open-loop requests/s (0: as fast as possible)")
)

// BenchmarkServer runs the real omahad (package server, through omahatest) in-process on
// SQLite and on PostgreSQL (when TWINSLOT_TEST_POSTGRES is set) and drives it with the load
// generator over loopback: every simulated host checks in once, then the realistic mix. It
// checks that every host and every event was recorded and reports checks/s, p50/p99/max
// latency and the database size per 100k instances. Generator and server share the machine's
// cores, so the rates are a lower bound for the server alone.
//
//	go test ./omaha/omahaload -run '^$' -bench BenchmarkServer -benchtime 1x
func BenchmarkServer(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "omahad.db")
		benchServer(b, path, func() *sql.DB {
			db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
			if err != nil {
				b.Fatal(err)
			}
			return db
		}, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`)
	})
	b.Run("postgres", func(b *testing.B) {
		dsn := omahatest.PostgresDSN(b) // skips when TWINSLOT_TEST_POSTGRES is not set
		benchServer(b, dsn, func() *sql.DB {
			cfg, err := pgx.ParseConfig(dsn)
			if err != nil {
				b.Fatal(err)
			}
			return stdlib.OpenDB(*cfg)
		}, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'`)
	})
}

func benchServer(b *testing.B, dsn string, open func() *sql.DB, sizeQuery string) {
	// The garbage collector as omahad serve sets it (GOGC=400 unless GOGC is set).
	defer omahad.SetGCPercent(os.Getenv("GOGC"))()
	s := omahatest.New(b, omahatest.WithDSN(dsn))
	key := payloadtest.NewKey(b, "")
	s.CreateApp(b, payload.DefaultAppID, payloadtest.TrustRoot(b, 1, 0, key))
	// Hosts on stable below 1.2.0 are offered it (two thirds of the stable third).
	s.Publish(b, "stable", s.BuildPayload(b, "1.2.0", key))

	machines := *benchMachines
	if testing.Short() {
		machines = 2000
	}
	cfg := omahaload.Config{
		URL: s.UpdateURL, Machines: machines, Requests: machines * *benchRounds, Duration: 15 * time.Minute,
		Concurrency: *benchConcurrency, Rate: *benchRate, AppID: payload.DefaultAppID, Seed: 1,
	}
	var total omahaload.Result
	b.ResetTimer()
	for range b.N {
		res, err := omahaload.Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		total = *res // the last run's latencies; counts below add up
		b.StopTimer()
		s.Flush(b)
		b.StartTimer()
	}
	b.StopTimer()
	res := &total
	var text strings.Builder
	res.WriteText(&text)
	b.Logf("%d hosts:\n%s%s", machines, text.String(), writerStats(b, s.URL))
	if res.Requests != int64(cfg.Requests) {
		b.Errorf("only %d of %d requests finished within %v", res.Requests, cfg.Requests, cfg.Duration)
	}
	if res.Errors != 0 {
		b.Errorf("%d errors: %v", res.Errors, res.ErrorKinds)
	}

	// Every check-in recorded: one instance per host, one event per request that carries one
	// (all but pings), times the runs.
	db := open()
	defer db.Close()
	ctx := context.WithoutCancel(b.Context())
	var instances, events, size int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM instances`).Scan(&instances); err != nil {
		b.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&events); err != nil {
		b.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, sizeQuery).Scan(&size); err != nil {
		b.Fatal(err)
	}
	if instances != int64(machines) {
		b.Errorf("%d instances recorded, want %d", instances, machines)
	}
	if want := int64(b.N) * (res.Requests - res.Pings); events != want {
		b.Errorf("%d events recorded, want %d", events, want)
	}
	b.ReportMetric(res.ChecksPerSecond(), "checks/s")
	b.ReportMetric(res.RequestsPerSecond(), "requests/s")
	b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(res.Max.Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(res.ByOutcome["offer"].P99.Microseconds())/1000, "offer-p99-ms")
	b.ReportMetric(float64(res.Errors), "errors")
	b.ReportMetric(float64(size)/1e6*100_000/float64(instances), "dbMB/100k-instances")
	// What stays live with the server up and its caches full (the generator's state is garbage
	// by now): the heap peaks near (1 + GOGC/100) times this.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MiB")
	b.ReportMetric(0, "ns/op") // one op is a whole run; the rates above are the result
}

// writerStats reads the server's /metrics and summarises its check-in writer: transactions,
// rows per transaction and time per transaction.
func writerStats(b *testing.B, base string) string {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	v := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		for _, name := range []string{"omahad_checkin_batch_rows_sum", "omahad_checkin_batch_rows_count",
			`omahad_db_seconds_sum{op="write_checkins"}`, `omahad_db_seconds_count{op="write_checkins"}`} {
			if rest, ok := strings.CutPrefix(line, name+" "); ok {
				v[name], _ = strconv.ParseFloat(rest, 64)
			}
		}
	}
	n := v[`omahad_db_seconds_count{op="write_checkins"}`]
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("  writer: %.0f transactions, %.0f rows each, %.2f ms each\n", n,
		v["omahad_checkin_batch_rows_sum"]/max(v["omahad_checkin_batch_rows_count"], 1),
		v[`omahad_db_seconds_sum{op="write_checkins"}`]/n*1000)
}
