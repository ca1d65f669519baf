package faults

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" driver, to read the server's database afterwards

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/omahaload"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// buildOmahad builds this tree's omahad into dir.
func buildOmahad(t *testing.T, dir string) string {
	t.Helper()
	gobin := needTool(t, "go", "golang")
	out := filepath.Join(dir, "omahad")
	cmd := exec.Command(gobin, "build", "-o", out, "github.com/twinslot/twinslot/omaha/cmd/omahad")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build omahad: %v\n%s", err, b)
	}
	return out
}

// prepare creates the app and publishes 1.2.0 on stable in the database at dsn (then closes
// the in-process server), so hosts of stable below 1.2.0 get grants.
func prepare(t *testing.T, dsn, storeDir string) {
	t.Run("prepare", func(t *testing.T) {
		s := omahatest.New(t, omahatest.WithDSN(dsn), omahatest.WithConfig(func(c *server.Config) { c.StoreDir = storeDir }))
		key := payloadtest.NewKey(t, "")
		s.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
		s.Publish(t, "stable", s.BuildPayload(t, "1.2.0", key))
	})
}

// replica is one omahad process and the load driven at it.
type replica struct {
	name string
	p    *proc
	url  string
	seed uint64

	mu       sync.Mutex
	sent     map[[2]string]int // machine, kind -> requests sent (acknowledged or not)
	acked    map[[2]string]int // machine, kind -> acknowledged
	offered  map[string]bool   // machine -> an acknowledged offer
	restarts []time.Time
	firstOK  []time.Duration // per restart: first acknowledged request after it
	errs     map[string]int
}

func startReplica(t *testing.T, dir, bin, name, dsn, storeDir string, port int, seed uint64, extra ...string) *replica {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	args := append([]string{"serve", "--listen", addr, "--db", dsn, "--store", storeDir, "--log-level", "warn"}, extra...)
	r := &replica{name: name, p: newProc(t, dir, name, bin, args...), url: "http://" + addr + "/v1/update/", seed: seed,
		sent: map[[2]string]int{}, acked: map[[2]string]int{}, offered: map[string]bool{}, errs: map[string]int{}}
	r.p.start(t)
	r.waitUp(t)
	return r
}

// waitUp waits until the replica answers /healthz.
func (r *replica) waitUp(t *testing.T) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second}
	health := strings.TrimSuffix(r.url, "/v1/update/") + "/healthz"
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(health)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) || r.p.exited() {
			t.Fatalf("%s not up: %v (log %s)", r.name, err, r.p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *replica) exchanged(x omahaload.Exchange) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := [2]string{x.Machine, x.Kind}
	r.sent[k]++
	if x.Err != "" {
		r.errs[x.Err]++
		return
	}
	r.acked[k]++
	if x.Offered {
		r.offered[x.Machine] = true
	}
	if n := len(r.restarts); n > 0 && len(r.firstOK) < n && x.At.After(r.restarts[n-1]) {
		r.firstOK = append(r.firstOK, x.At.Sub(r.restarts[n-1]))
	}
}

// crash kills the replica with SIGKILL, waits down, and starts it again.
func (r *replica) crash(t *testing.T, down time.Duration) {
	r.p.kill(t)
	time.Sleep(down)
	r.mu.Lock()
	r.restarts = append(r.restarts, time.Now())
	r.mu.Unlock()
	r.p.start(t)
}

// load drives omahaload at the replica: bounded in requests and time, open loop.
func (r *replica) load(ctx context.Context, t *testing.T, machines, rate int, d time.Duration) *omahaload.Result {
	res, err := omahaload.Run(ctx, omahaload.Config{
		URL: r.url, Machines: machines, Requests: rate * int(d/time.Second), Duration: d + 10*time.Second, Rate: float64(rate),
		Concurrency: 32, AppID: payload.DefaultAppID, Seed: r.seed, Exchanged: r.exchanged,
	})
	if err != nil {
		t.Error(err)
	}
	return res
}

// stored is what the database holds afterwards.
type stored struct {
	events  map[[2]string]int // machine, kind -> events
	granted map[string]bool   // machine -> granted_version set
	rows    map[string]bool   // machine -> an instance row
}

func readStored(t *testing.T, db *sql.DB) stored {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	st := stored{events: map[[2]string]int{}, granted: map[string]bool{}, rows: map[string]bool{}}
	rows, err := db.QueryContext(ctx, `SELECT machine_id, type, result, error_code FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m string
		var typ, res int
		var code int64
		if err := rows.Scan(&m, &typ, &res, &code); err != nil {
			t.Fatal(err)
		}
		kind := fmt.Sprintf("%d/%d", typ, res)
		switch {
		case typ == 3 && res == 2:
			kind = "check"
		case typ == 3 && res == 0 && omaha.ErrorCode(code).Base() == omaha.ErrorCodeRollback:
			kind = "rollback-check"
		}
		st.events[[2]string{m, kind}]++
	}
	rows.Close()
	rows, err = db.QueryContext(ctx, `SELECT machine_id, granted_version, granted_at FROM instances`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var m, v string
		var at int64
		if err := rows.Scan(&m, &v, &at); err != nil {
			t.Fatal(err)
		}
		st.rows[m] = true
		st.granted[m] = v != "" && at != 0
	}
	rows.Close()
	return st
}

// verdict compares what the replicas were told with what is stored: lost acknowledged events
// by kind, grants lost, events stored more often than sent.
type verdict struct {
	lost      map[string]int // kind -> acknowledged but not stored
	acked     map[string]int
	grants    int // acknowledged offers
	lostGrant int
	dup       int // (machine, kind) stored more often than sent
	lostRows  int // machines with an acknowledged request but no instance row
}

func judge(st stored, rs ...*replica) verdict {
	v := verdict{lost: map[string]int{}, acked: map[string]int{}}
	sent := map[[2]string]int{}
	acked := map[[2]string]int{}
	machines := map[string]bool{}
	for _, r := range rs {
		r.mu.Lock()
		for k, n := range r.sent {
			sent[k] += n
		}
		for k, n := range r.acked {
			acked[k] += n
			machines[k[0]] = true
		}
		for m := range r.offered {
			v.grants++
			if !st.granted[m] {
				v.lostGrant++
			}
		}
		r.mu.Unlock()
	}
	for k, n := range acked {
		if k[1] == "ping" {
			continue
		}
		v.acked[k[1]] += n
		if got := st.events[k]; got < n {
			v.lost[k[1]] += n - got
		}
	}
	for k, n := range st.events {
		if n > sent[k] {
			v.dup++
		}
	}
	for m := range machines {
		if !st.rows[m] {
			v.lostRows++
		}
	}
	return v
}

// durableKinds are the events acknowledged only after their commit.
var durableKinds = []string{"3/0", "rollback-check", "13/1", "14/1", "3/1"}

func (v verdict) row(fault, recovery, notes string) row {
	lostDurable := 0
	for _, k := range durableKinds {
		lostDurable += v.lost[k]
	}
	ok := func(bad int) string {
		if bad == 0 {
			return "ok"
		}
		return fmt.Sprintf("FAILED (%d)", bad)
	}
	var lost []string
	kinds := append([]string{"check"}, durableKinds...)
	for _, k := range kinds {
		lost = append(lost, fmt.Sprintf("%s %d/%d", k, v.lost[k], v.acked[k]))
	}
	lost = append(lost, fmt.Sprintf("grants %d/%d", v.lostGrant, v.grants))
	return row{
		Fault:      fault,
		Invariants: fmt.Sprintf("acked failure/rollback/install events stored: %s; acked grants stored: %s; no event stored twice: %s", ok(lostDurable), ok(v.lostGrant), ok(v.dup)),
		MaxHolders: "-",
		Lost:       strings.Join(lost, ", ") + fmt.Sprintf(" (lost/acked; routine check = 3/2, answered before commit); instances %d", v.lostRows),
		Recovery:   recovery,
		Notes:      notes,
	}
}

func (v verdict) check(t *testing.T) {
	t.Helper()
	for _, k := range durableKinds {
		if v.lost[k] > 0 {
			t.Errorf("%d acknowledged %s events lost", v.lost[k], k)
		}
	}
	if v.lostGrant > 0 {
		t.Errorf("%d acknowledged grants lost", v.lostGrant)
	}
	if v.dup > 0 {
		t.Errorf("%d (machine, event) pairs stored more often than sent", v.dup)
	}
	if v.acked["3/0"] == 0 || v.grants == 0 {
		t.Errorf("the load produced no acknowledged failures (%d) or grants (%d): nothing was tested", v.acked["3/0"], v.grants)
	}
}

func recoveries(rs ...*replica) string {
	var parts []string
	for _, r := range rs {
		r.mu.Lock()
		for i, d := range r.firstOK {
			parts = append(parts, fmt.Sprintf("%s restart %d: first ack %s after exec", r.name, i+1, ms(d)))
		}
		if len(r.firstOK) < len(r.restarts) {
			parts = append(parts, fmt.Sprintf("%s: no ack after its last restart", r.name))
		}
		r.mu.Unlock()
	}
	return strings.Join(parts, "; ")
}

func errorKinds(rs ...*replica) string {
	m := map[string]int{}
	for _, r := range rs {
		r.mu.Lock()
		for k, n := range r.errs {
			m[k] += n
		}
		r.mu.Unlock()
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// TestOmahadSQLiteKilled kills the single SQLite omahad with SIGKILL under load and restarts it.
func TestOmahadSQLiteKilled(t *testing.T) {
	needFaults(t)
	dir := t.TempDir()
	bin := buildOmahad(t, dir)
	dsn, storeDir := filepath.Join(dir, "omahad.db"), filepath.Join(dir, "payloads")
	prepare(t, dsn, storeDir)
	port := freePorts(t, 1)[0]
	r := startReplica(t, dir, bin, "omahad-sqlite", dsn, storeDir, port, 11)

	var wg sync.WaitGroup
	var res *omahaload.Result
	wg.Go(func() { res = r.load(t.Context(), t, 500, 400, 8*time.Second) })
	time.Sleep(3 * time.Second)
	r.crash(t, time.Second)
	time.Sleep(2 * time.Second)
	r.crash(t, 500*time.Millisecond)
	wg.Wait()
	r.waitUp(t)
	r.p.stopWith(t, syscall.SIGTERM) // a graceful stop writes what the restarted server queued

	db, err := sql.Open("sqlite", dsn+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v := judge(readStored(t, db), r)
	v.check(t)
	report(t, v.row("omahad SQLite: SIGKILL x2 under load", recoveries(r),
		fmt.Sprintf("%d requests at 400/s to 500 hosts; client errors: %s", res.Requests, errorKinds(r))))
}

// TestOmahadPostgresReplicasKilled kills each of two omahad replicas on one PostgreSQL database
// with SIGKILL, at different times, under load on both.
func TestOmahadPostgresReplicasKilled(t *testing.T) {
	needFaults(t)
	dir := t.TempDir()
	if os.Getenv("TWINSLOT_TEST_POSTGRES") == "" {
		t.Setenv("TWINSLOT_TEST_POSTGRES", startPostgres(t, dir))
	}
	dsn := omahatest.PostgresDSN(t)
	bin := buildOmahad(t, dir)
	storeDir := filepath.Join(dir, "payloads")
	prepare(t, dsn, storeDir)
	ports := freePorts(t, 2)
	a := startReplica(t, dir, bin, "omahad-pg-a", dsn, storeDir, ports[0], 21, "--instance-cache", "-1")
	b := startReplica(t, dir, bin, "omahad-pg-b", dsn, storeDir, ports[1], 22, "--instance-cache", "-1")

	var wg sync.WaitGroup
	var ra, rb *omahaload.Result
	wg.Go(func() { ra = a.load(t.Context(), t, 400, 300, 8*time.Second) })
	wg.Go(func() { rb = b.load(t.Context(), t, 400, 300, 8*time.Second) })
	time.Sleep(2500 * time.Millisecond)
	a.crash(t, time.Second)
	time.Sleep(1500 * time.Millisecond)
	b.crash(t, time.Second)
	wg.Wait()
	a.waitUp(t)
	b.waitUp(t)
	a.p.stopWith(t, syscall.SIGTERM)
	b.p.stopWith(t, syscall.SIGTERM)

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	v := judge(readStored(t, db), a, b)
	v.check(t)
	report(t, v.row("omahad PostgreSQL: 2 replicas, each SIGKILL once under load", recoveries(a, b),
		fmt.Sprintf("%d+%d requests at 300/s each to 2x400 hosts; client errors: %s", ra.Requests, rb.Requests, errorKinds(a, b))))
}

// startPostgres starts a throw-away PostgreSQL cluster on a loopback port (as the postgres user
// when root), stopped with the test, and returns its DSN; it skips without PostgreSQL.
func startPostgres(t *testing.T, dir string) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Skip("PostgreSQL not installed and TWINSLOT_TEST_POSTGRES not set: skipping (apt-get install postgresql; make faults does as root)")
	}
	sort.Strings(bins)
	bindir := filepath.Dir(bins[len(bins)-1])
	pgdir, err := os.MkdirTemp("", "twinslot-faults-pg")
	if err != nil {
		t.Fatal(err)
	}
	var run []string
	if os.Geteuid() == 0 {
		if err := exec.Command("chown", "postgres:postgres", pgdir).Run(); err != nil {
			t.Fatalf("chown %s: %v", pgdir, err)
		}
		run = []string{"runuser", "-u", "postgres", "--"}
	}
	pg := func(args ...string) {
		t.Helper()
		full := append(append([]string{}, run...), args...)
		if out, err := exec.Command(full[0], full[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	port := freePorts(t, 1)[0]
	pg(filepath.Join(bindir, "initdb"), "-D", filepath.Join(pgdir, "data"), "-U", "postgres", "-A", "trust")
	pg(filepath.Join(bindir, "pg_ctl"), "-D", filepath.Join(pgdir, "data"), "-l", filepath.Join(pgdir, "log"), "-w",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", port, pgdir), "start")
	t.Cleanup(func() {
		full := append(append([]string{}, run...), filepath.Join(bindir, "pg_ctl"), "-D", filepath.Join(pgdir, "data"), "-m", "fast", "stop")
		exec.Command(full[0], full[1:]...).Run()
		os.RemoveAll(pgdir)
	})
	_ = dir
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}
