package omahaload

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
)

// goldenHost is the host of omaha/testdata/request-*.xml.
func goldenHost() omaha.Host {
	return omaha.Host{
		AppID: "e96281a6-d1af-4bde-9a0a-97b76e56dc57", MachineID: "639c3d1041b94d7c915c18174eeeb154",
		BootID: "60eb8c4b-919d-422f-9d4f-8fda10c50ab8", Version: "4081.2.0", Track: "stable",
		Board: "amd64-usr", OEM: "azure", OEMVersion: "2.9.1.1", AlephVersion: "3815.2.0",
		MachineAlias: "worker-07", Arch: "x86_64",
	}
}

func TestRequestsMatchUpdateEngineBytes(t *testing.T) {
	tests := []struct {
		kind kind
		file string
	}{
		{kindCheck, "request-updatecheck-idle.xml"},
		{kindRollbackCheck, "request-updatecheck-rollback.xml"},
		{kindPing, "request-ping.xml"},
		{kindDownloadStarted, "request-event-13-1.xml"},
		{kindDownloaded, "request-event-14-1.xml"},
		{kindInstalled, "request-event-3-1.xml"},
		{kindFailed, "request-event-3-0-error.xml"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("..", "testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			writeRequest(&b, goldenHost(), tt.kind)
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("body differs from %s:\n%s", tt.file, b.Bytes())
			}
		})
	}
}

func TestRequestEscapesConfiguredText(t *testing.T) {
	h := goldenHost()
	h.Track = `a"b<c&d`
	var b bytes.Buffer
	writeRequest(&b, h, kindCheck)
	req, err := omaha.ParseRequest(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Apps[0].Track; got != h.Track {
		t.Errorf("track = %q, want %q", got, h.Track)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no url", Config{}},
		{"private address", Config{URL: "http://10.0.0.1:8080/v1/update/"}},
		{"public name", Config{URL: "http://update.example.com/v1/update/"}},
		{"loopback-looking name", Config{URL: "http://127.0.0.1.example.com/v1/update/"}},
		{"unspecified", Config{URL: "http://0.0.0.0:8080/"}},
		{"not http", Config{URL: "ftp://127.0.0.1/"}},
		{"too many machines", Config{URL: "http://127.0.0.1/", Machines: MaxMachines + 1}},
		{"too many requests", Config{URL: "http://127.0.0.1/", Requests: MaxRequests + 1}},
		{"too much concurrency", Config{URL: "http://127.0.0.1/", Concurrency: MaxConcurrency + 1}},
		{"bad version", Config{URL: "http://127.0.0.1/", Versions: []string{"1 0"}}},
		{"bad app id", Config{URL: "http://127.0.0.1/", AppID: "flatcar"}},
		{"negative rate", Config{URL: "http://127.0.0.1/", Rate: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res, err := Run(t.Context(), tt.cfg); err == nil {
				t.Fatalf("Run = %+v, want a configuration error", res)
			}
		})
	}
}

// fakeServer answers like an Omaha server: offers an update to hosts on version 1.0.0 and
// noupdate to others, and records who checked in.
type fakeServer struct {
	mu       sync.Mutex
	machines map[string]int
	kinds    map[string]int
	fail     func(n int) bool // answer 500 to the nth request
	n        int
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := omaha.ParseRequest(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a := req.Apps[0]
	if err := a.Validate(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.n++
	fail := f.fail != nil && f.fail(f.n)
	f.machines[a.MachineID]++
	k := "ping"
	switch {
	case a.UpdateCheck != nil:
		k = "check"
	case len(a.Events) == 1:
		ev := a.Events[0]
		k = strings.Join([]string{ev.Type.String(), ev.Result.String()}, "/")
	}
	f.kinds[k]++
	f.mu.Unlock()
	if fail {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	resp := omaha.NewResponse()
	ra := resp.AddApp(a.AppID, omaha.StatusOK)
	ra.Acknowledge(a)
	if a.UpdateCheck != nil {
		if a.Version == "1.0.0" {
			if _, err := ra.AddUpdate(omaha.Update{
				Version: "1.2.0", URLs: []string{"http://127.0.0.1/packages/"}, PackageName: "p.tsp",
				Size: 1, SHA256: sha256.Sum256([]byte("x")),
			}); err != nil {
				panic(err)
			}
		} else {
			ra.AddUpdateCheck(omaha.StatusNoUpdate)
		}
	}
	body, _ := resp.Marshal()
	w.Header().Set("Content-Type", omaha.ContentType)
	w.Write(body)
}

func newFake(t *testing.T) (*fakeServer, string) {
	f := &fakeServer{machines: map[string]int{}, kinds: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL + "/v1/update/"
}

func TestRunFirstRoundChecksEveryMachine(t *testing.T) {
	f, url := newFake(t)
	res, err := Run(t.Context(), Config{URL: url, Machines: 90, Concurrency: 4, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 90 || res.Checks != 90 || res.Errors != 0 {
		t.Fatalf("result = %+v", res)
	}
	if len(f.machines) != 90 || f.kinds["check"] != 90 {
		t.Errorf("server saw %d machines and kinds %v, want 90 checks from 90 machines", len(f.machines), f.kinds)
	}
	// Versions cycle 1.0.0, 1.1.0, 1.2.0: a third of the hosts get an offer.
	if res.Offers != 30 || res.NoUpdates != 60 {
		t.Errorf("offers %d, noupdates %d; want 30, 60", res.Offers, res.NoUpdates)
	}
	if o, n := res.ByOutcome["offer"], res.ByOutcome["noupdate"]; o.Count != 30 || n.Count != 60 || o.P99 > o.Max || o.P50 == 0 {
		t.Errorf("by outcome = %+v", res.ByOutcome)
	}
	if !(res.P50 > 0 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered", res.P50, res.P99, res.Max)
	}
}

func TestRunMix(t *testing.T) {
	f, url := newFake(t)
	const machines, requests = 50, 4050
	res, err := Run(t.Context(), Config{URL: url, Machines: machines, Requests: requests, Concurrency: 8, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != requests || res.Errors != 0 {
		t.Fatalf("result = %+v", res)
	}
	if res.Checks+res.Events+res.Pings != requests {
		t.Errorf("checks %d + events %d + pings %d != %d", res.Checks, res.Events, res.Pings, requests)
	}
	if int64(f.kinds["check"]) != res.Checks || int64(f.kinds["ping"]) != res.Pings {
		t.Errorf("server kinds %v disagree with %+v", f.kinds, res)
	}
	// 4000 requests after the first round: about 85 % checks, every kind present.
	mixed := res.Checks - machines
	if mixed < 3200 || mixed > 3600 {
		t.Errorf("%d checks among 4000 mixed requests, want about 3400", mixed)
	}
	for _, k := range []string{"update download started/success", "update download finished/success",
		"update complete/success", "update complete/error", "ping"} {
		if f.kinds[k] == 0 {
			t.Errorf("no %q requests in the mix: %v", k, f.kinds)
		}
	}
	if len(f.machines) != machines {
		t.Errorf("server saw %d machines, want %d", len(f.machines), machines)
	}
}

func TestRunCountsErrors(t *testing.T) {
	f, url := newFake(t)
	f.fail = func(n int) bool { return n%10 == 0 }
	res, err := Run(t.Context(), Config{URL: url, Machines: 100, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || res.Errors != 10 || res.ErrorKinds["HTTP 503"] != 10 || res.ByOutcome["error"].Count != 10 {
		t.Errorf("result = %+v, want 10 errors of kind HTTP 503", res)
	}
	var out strings.Builder
	if err := res.WriteText(&out); err != nil || !strings.Contains(out.String(), "HTTP 503") || !strings.Contains(out.String(), "noupdate") {
		t.Errorf("WriteText = %q, %v", out.String(), err)
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	res, err := Run(t.Context(), Config{URL: srv.URL, Machines: 10, Concurrency: 2, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 0 || res.Errors != 0 {
		t.Errorf("requests cut off by the time limit were counted: %+v", res)
	}
}

func TestMachineIdentities(t *testing.T) {
	cfg := Config{Seed: 3}
	seen := map[string]bool{}
	for i := range 1000 {
		h := Machine(cfg, i)
		if h != Machine(cfg, i) {
			t.Fatalf("machine %d is not deterministic", i)
		}
		if seen[h.MachineID] {
			t.Fatalf("machine %d repeats id %s", i, h.MachineID)
		}
		seen[h.MachineID] = true
		var b bytes.Buffer
		writeRequest(&b, h, kindCheck)
		req, err := omaha.ParseRequest(&b)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Apps[0].Validate(); err != nil {
			t.Fatalf("machine %d: %v", i, err)
		}
	}
	if Machine(Config{Seed: 4}, 0).MachineID == Machine(cfg, 0).MachineID {
		t.Error("different seeds give the same machine")
	}
}

func TestRunOpenLoop(t *testing.T) {
	f, url := newFake(t)
	res, err := Run(t.Context(), Config{URL: url, Machines: 40, Concurrency: 4, Rate: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 40 || res.Errors != 0 || len(f.machines) != 40 {
		t.Errorf("result = %+v, server saw %d machines", res, len(f.machines))
	}
}

func TestMainCommand(t *testing.T) {
	f, url := newFake(t)
	var out, errOut strings.Builder
	code := Main(t.Context(), []string{"run", "--url", url, "--machines", "12", "--json"}, strings.NewReader(""), &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{`"requests": 12`, `"checks_per_second"`, `"p99_ns"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("JSON output lacks %s:\n%s", want, out.String())
		}
	}
	if len(f.machines) != 12 {
		t.Errorf("server saw %d machines", len(f.machines))
	}
	if !strings.Contains(errOut.String(), "requests 12/12") {
		t.Errorf("no final progress line on stderr: %q", errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := Main(t.Context(), []string{"run", "--url", "http://192.0.2.1/v1/update/"}, nil, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "loopback") {
		t.Errorf("non-loopback target: exit %d, stderr %q", code, errOut.String())
	}
	if code := Main(t.Context(), []string{"run"}, nil, &out, &errOut); code != 2 {
		t.Errorf("missing --url: exit %d, want 2", code)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i))
	}
	tests := []struct {
		n, p int
		want time.Duration
	}{
		{1, 50, 1}, {1, 99, 1}, {2, 50, 1}, {2, 99, 2}, {100, 50, 50}, {100, 99, 99}, {100, 100, 100},
	}
	for _, tt := range tests {
		if got := percentile(lat[:tt.n], tt.p); got != tt.want {
			t.Errorf("percentile(1..%d, %d) = %d, want %d", tt.n, tt.p, got, tt.want)
		}
	}
}
