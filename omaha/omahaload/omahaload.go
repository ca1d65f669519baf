package omahaload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinslot/twinslot/omaha"
)

// Limits on a run.
const (
	MaxMachines    = 10_000_000
	MaxRequests    = 50_000_000
	MaxConcurrency = 1024
	// RequestTimeout bounds one exchange.
	RequestTimeout = 10 * time.Second
	maxErrorKinds  = 8
)

// DefaultAppID is the app id simulated hosts report (twinslot's, as in the payload package).
const DefaultAppID = "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc"

// Config describes a run. Zero fields take the defaults noted.
type Config struct {
	URL         string        // update endpoint on loopback, e.g. http://127.0.0.1:8080/v1/update/
	Machines    int           // simulated hosts (default 1000)
	Requests    int           // total requests (default Machines: one check per host)
	Duration    time.Duration // time limit (default 1 minute)
	Concurrency int           // requests in flight (default 32)
	// Rate, when > 0, starts requests on a fixed schedule of Rate per second (open loop).
	Rate     float64
	AppID    string   // default DefaultAppID
	Board    string   // default amd64-usr
	Tracks   []string // default stable, beta, alpha
	Versions []string // default 1.0.0, 1.1.0, 1.2.0
	Seed     uint64   // machine ids and the request mix derive from it
	// HTTPClient, when nil, is a client of the run's own with keep-alive connections and no
	// proxy.
	HTTPClient *http.Client
	// Progress, when set, is called about every ProgressInterval with the number of
	// requests finished so far, and once at the end.
	Progress func(done int64)
	// Exchanged, when set, is called after every finished request (from the request's
	// worker goroutine, so concurrently), for checks of what the server acknowledged.
	Exchanged func(Exchange)
}

// Exchange is one finished request of a run.
type Exchange struct {
	Machine string // machine id
	// Kind is what was sent: "check" (ping, updatecheck, 3/2), "rollback-check" (3/0 code 44
	// instead of 3/2), "ping", or the event "13/1", "14/1", "3/1", "3/0".
	Kind string
	// Err is "" when the server acknowledged the request (200 with a well-formed answer),
	// else a short description; an unacknowledged request may still have been recorded.
	Err string
	// Offered: a check answered with an update (the server granted or re-offered it).
	Offered bool
	// At is when the answer (or the error) came.
	At time.Time
}

var kindNames = [...]string{kindCheck: "check", kindRollbackCheck: "rollback-check", kindDownloadStarted: "13/1",
	kindDownloaded: "14/1", kindInstalled: "3/1", kindPing: "ping", kindFailed: "3/0"}

// ProgressInterval is how often Config.Progress is called.
const ProgressInterval = 200 * time.Millisecond

// Result is what a run measured.
type Result struct {
	Requests  int64 `json:"requests"`
	Checks    int64 `json:"checks"`
	Events    int64 `json:"events"`
	Pings     int64 `json:"pings"`
	Offers    int64 `json:"offers"`    // update checks answered with an update
	NoUpdates int64 `json:"noupdates"` // update checks answered noupdate
	Errors    int64 `json:"errors"`
	// ErrorKinds counts errors by a short description (at most a few distinct kinds are kept).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	Elapsed    time.Duration    `json:"elapsed_ns"`
	P50        time.Duration    `json:"p50_ns"`
	P99        time.Duration    `json:"p99_ns"`
	Max        time.Duration    `json:"max_ns"`
	// ByOutcome splits the latencies by what the request was and how it was answered:
	// "offer" (a check answered with an update: the server took a grant decision),
	// "noupdate", "event", "ping", "error".
	ByOutcome map[string]Latency `json:"by_outcome"`
}

// Latency summarizes the latencies of one outcome.
type Latency struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// outcome indexes the latency classes of Result.ByOutcome.
type outcome int

const (
	outOffer outcome = iota
	outNoUpdate
	outEvent
	outPing
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"offer", "noupdate", "event", "ping", "error"}

func summarize(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	slices.Sort(lat)
	return Latency{Count: int64(len(lat)), P50: percentile(lat, 50), P99: percentile(lat, 99), Max: lat[len(lat)-1]}
}

// ChecksPerSecond is update checks sent per second of the run.
func (r *Result) ChecksPerSecond() float64 { return perSecond(r.Checks, r.Elapsed) }

// RequestsPerSecond is requests of any kind sent per second of the run.
func (r *Result) RequestsPerSecond() float64 { return perSecond(r.Requests, r.Elapsed) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// MarshalJSON adds the rates to the JSON form.
func (r *Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		*plain
		ChecksPerSecond   float64 `json:"checks_per_second"`
		RequestsPerSecond float64 `json:"requests_per_second"`
	}{(*plain)(r), r.ChecksPerSecond(), r.RequestsPerSecond()})
}

// WriteText prints the result for people.
func (r *Result) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w,
		"requests %d in %v: %.0f checks/s, %.0f requests/s\n"+
			"  checks %d (offers %d, noupdate %d), events %d, pings %d\n"+
			"  latency p50 %v, p99 %v, max %v\n"+
			"  errors %d\n",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.ChecksPerSecond(), r.RequestsPerSecond(),
		r.Checks, r.Offers, r.NoUpdates, r.Events, r.Pings,
		r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond),
		r.Errors)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(r.ErrorKinds) {
		if _, err := fmt.Fprintf(w, "    %6d  %s\n", r.ErrorKinds[k], k); err != nil {
			return err
		}
	}
	for _, name := range outcomeNames {
		l, ok := r.ByOutcome[name]
		if !ok || l.Count == 0 {
			continue
		}
		if _, err := fmt.Fprintf(w, "  %-8s %7d  p50 %v, p99 %v, max %v\n", name, l.Count,
			l.P50.Round(10*time.Microsecond), l.P99.Round(10*time.Microsecond), l.Max.Round(10*time.Microsecond)); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (c *Config) applyDefaults() {
	if c.Machines == 0 {
		c.Machines = 1000
	}
	if c.Requests == 0 {
		c.Requests = c.Machines
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.AppID == "" {
		c.AppID = DefaultAppID
	}
	if c.Board == "" {
		c.Board = "amd64-usr"
	}
	if len(c.Tracks) == 0 {
		c.Tracks = []string{"stable", "beta", "alpha"}
	}
	if len(c.Versions) == 0 {
		c.Versions = []string{"1.0.0", "1.1.0", "1.2.0"}
	}
}

func (c *Config) validate() error {
	switch {
	case c.Machines < 1 || c.Machines > MaxMachines:
		return fmt.Errorf("machines %d: want 1 to %d", c.Machines, MaxMachines)
	case c.Requests < 1 || c.Requests > MaxRequests:
		return fmt.Errorf("requests %d: want 1 to %d", c.Requests, MaxRequests)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return fmt.Errorf("concurrency %d: want 1 to %d", c.Concurrency, MaxConcurrency)
	case c.Duration < 0 || c.Rate < 0:
		return errors.New("duration and rate must not be negative")
	}
	if _, err := omaha.ParseAppID(c.AppID); err != nil {
		return err
	}
	for _, v := range c.Versions {
		if err := omaha.CheckVersion(v); err != nil {
			return err
		}
	}
	for _, t := range append(append([]string{}, c.Tracks...), c.Board) {
		if err := omaha.CheckText("track/board", t, omaha.MaxTrackLen); err != nil {
			return err
		}
	}
	return checkLoopback(c.URL)
}

// checkLoopback refuses any target that is not a loopback address.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("url %q: want http://127.0.0.1:PORT/v1/update/", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("url %q: the load generator only targets loopback addresses (127.0.0.1, ::1, localhost)", raw)
}

// Run drives the load described by cfg and returns what it measured. It returns an error only
// for a bad configuration; failed requests are counted in the result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.applyDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load configuration: %w", err)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := &http.Transport{
			Proxy:               nil, // loopback only: never through a proxy
			MaxIdleConns:        cfg.Concurrency,
			MaxIdleConnsPerHost: cfg.Concurrency,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}
		defer tr.CloseIdleConnections()
		hc = &http.Client{Transport: tr}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	r := &run{cfg: cfg, hc: hc, start: time.Now()}
	var wg sync.WaitGroup
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		w := &worker{run: r, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), kinds: map[string]int64{}}
		workers[i] = w
		wg.Go(func() { w.loop(ctx) })
	}
	stopProgress := r.reportProgress()
	wg.Wait()
	stopProgress()
	return r.result(workers), nil
}

type run struct {
	cfg   Config
	hc    *http.Client
	start time.Time
	next  atomic.Int64 // index of the next request
	done  atomic.Int64 // requests finished
}

// reportProgress calls cfg.Progress until the returned function is called.
func (r *run) reportProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				r.cfg.Progress(r.done.Load())
				return
			case <-t.C:
				r.cfg.Progress(r.done.Load())
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

type worker struct {
	run       *run
	rng       *rand.Rand
	body      bytes.Buffer
	latencies [numOutcomes][]time.Duration
	res       Result
	kinds     map[string]int64
}

type kind int

const (
	kindCheck kind = iota
	kindRollbackCheck
	kindDownloadStarted
	kindDownloaded
	kindInstalled
	kindPing
	kindFailed
)

// pick draws a request kind from the mix in the package documentation (per 1000).
func (w *worker) pick(j int64) kind {
	if j < int64(w.run.cfg.Machines) {
		return kindCheck
	}
	switch n := w.rng.IntN(1000); {
	case n < 5:
		return kindRollbackCheck
	case n < 850:
		return kindCheck
	case n < 890:
		return kindDownloadStarted
	case n < 930:
		return kindDownloaded
	case n < 960:
		return kindInstalled
	case n < 985:
		return kindPing
	default:
		return kindFailed
	}
}

func (w *worker) loop(ctx context.Context) {
	cfg := &w.run.cfg
	for ctx.Err() == nil {
		j := w.run.next.Add(1) - 1
		if j >= int64(cfg.Requests) {
			return
		}
		begin := time.Now()
		if cfg.Rate > 0 {
			begin = w.run.start.Add(time.Duration(float64(j) / cfg.Rate * float64(time.Second)))
			if d := time.Until(begin); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
		k := w.pick(j)
		w.body.Reset()
		h := machine(cfg, int(j%int64(cfg.Machines)))
		writeRequest(&w.body, h, k)
		out, errKind := w.send(ctx, k)
		if cfg.Exchanged != nil {
			cfg.Exchanged(Exchange{Machine: h.MachineID, Kind: kindNames[k], Err: errKind, Offered: out == outOffer, At: time.Now()})
		}
		if ctx.Err() != nil && errKind != "" {
			return // the run ended during this request: neither a result nor an error
		}
		if errKind != "" {
			out = outError
		}
		w.latencies[out] = append(w.latencies[out], time.Since(begin))
		w.run.done.Add(1)
		w.res.Requests++
		switch k {
		case kindCheck, kindRollbackCheck:
			w.res.Checks++
		case kindPing:
			w.res.Pings++
		default:
			w.res.Events++
		}
		if errKind != "" {
			w.res.Errors++
			w.kinds[errKind]++
		}
	}
}

// send posts the body and judges the answer; it returns the outcome and "" or a short error
// description.
func (w *worker) send(ctx context.Context, k kind) (outcome, string) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.run.cfg.URL, bytes.NewReader(w.body.Bytes()))
	if err != nil {
		return outError, "build request: " + err.Error()
	}
	req.Header.Set("Content-Type", omaha.ContentType)
	req.Header.Set("User-Agent", "twinslot-omahaload")
	res, err := w.run.hc.Do(req)
	if err != nil {
		return outError, "transport error"
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		return outError, "HTTP " + strconv.Itoa(res.StatusCode)
	}
	resp, err := omaha.ParseResponse(res.Body)
	if err != nil {
		return outError, "unparsable response"
	}
	if len(resp.Apps) != 1 {
		return outError, "response without exactly one app"
	}
	a := resp.Apps[0]
	if a.Status != omaha.StatusOK {
		return outError, "app status " + string(a.Status)
	}
	switch k {
	case kindPing:
		return outPing, ""
	case kindCheck, kindRollbackCheck:
	default:
		return outEvent, ""
	}
	if a.UpdateCheck == nil {
		return outError, "no updatecheck in answer to a check"
	}
	switch a.UpdateCheck.Status {
	case omaha.StatusNoUpdate:
		w.res.NoUpdates++
		return outNoUpdate, ""
	case omaha.StatusOK:
		if _, err := a.UpdateCheck.Update(); err != nil {
			return outError, "invalid offer"
		}
		w.res.Offers++
		return outOffer, ""
	}
	return outError, "updatecheck status " + string(a.UpdateCheck.Status)
}

func (r *run) result(workers []*worker) *Result {
	res := &Result{Elapsed: time.Since(r.start), ErrorKinds: map[string]int64{}, ByOutcome: map[string]Latency{}}
	var all []time.Duration
	var by [numOutcomes][]time.Duration
	for _, w := range workers {
		res.Requests += w.res.Requests
		res.Checks += w.res.Checks
		res.Events += w.res.Events
		res.Pings += w.res.Pings
		res.Offers += w.res.Offers
		res.NoUpdates += w.res.NoUpdates
		res.Errors += w.res.Errors
		for k, n := range w.kinds {
			if _, ok := res.ErrorKinds[k]; ok || len(res.ErrorKinds) < maxErrorKinds {
				res.ErrorKinds[k] += n
			} else {
				res.ErrorKinds["other"] += n
			}
		}
		for o, lat := range w.latencies {
			by[o] = append(by[o], lat...)
			all = append(all, lat...)
		}
	}
	total := summarize(all)
	res.P50, res.P99, res.Max = total.P50, total.P99, total.Max
	for o, lat := range by {
		if len(lat) > 0 {
			res.ByOutcome[outcomeNames[o]] = summarize(lat)
		}
	}
	return res
}

// percentile returns the nearest-rank p-th percentile of sorted, non-empty durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (len(sorted)*p + 99) / 100 // ceil(n·p/100)
	return sorted[max(rank, 1)-1]
}

// Machine returns the identity of simulated machine i (0 ≤ i < Machines) of a run with
// this configuration: machine id, boot id, version, track. Equal inputs give equal
// identities, so a rerun with the same seed reaches the same instances.
func Machine(cfg Config, i int) omaha.Host {
	cfg.applyDefaults()
	return machine(&cfg, i)
}

func machine(cfg *Config, i int) omaha.Host {
	var seed [16]byte
	binary.LittleEndian.PutUint64(seed[:8], cfg.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(i))
	sum := sha256.Sum256(seed[:])
	boot := hex.EncodeToString(sum[16:])
	return omaha.Host{
		AppID:        cfg.AppID,
		MachineID:    hex.EncodeToString(sum[:16]),
		BootID:       boot[:8] + "-" + boot[8:12] + "-" + boot[12:16] + "-" + boot[16:20] + "-" + boot[20:],
		Version:      cfg.Versions[i%len(cfg.Versions)],
		Track:        cfg.Tracks[(i/len(cfg.Versions))%len(cfg.Tracks)],
		Board:        cfg.Board,
		AlephVersion: cfg.Versions[0],
		MachineAlias: "sim-" + strconv.Itoa(i),
		Arch:         "x86_64",
	}
}
