package fleetlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
)

func header() http.Header {
	h := http.Header{}
	h.Set(fleetlock.HeaderName, "true")
	return h
}

func TestParseRequest(t *testing.T) {
	want := map[string]string{ // file -> kind ("" = valid)
		"valid.json": "", "valid-extra-field.json": "", "empty-id.json": fleetlock.KindInvalidID,
		"bad-group.json": fleetlock.KindInvalidGroup, "null-params.json": fleetlock.KindInvalidBody,
		"two-values.json": fleetlock.KindInvalidBody, "truncated.json": fleetlock.KindInvalidBody,
		"id-with-space.json": fleetlock.KindInvalidID,
	}
	files, _ := filepath.Glob("testdata/requests/*.json")
	if len(files) != len(want) {
		t.Fatalf("%d files in testdata/requests, %d expected answers", len(files), len(want))
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, perr := fleetlock.ParseRequest(header(), body)
		kind := ""
		if perr != nil {
			kind = perr.Kind
		}
		if kind != want[filepath.Base(f)] {
			t.Errorf("%s: kind %q, want %q", f, kind, want[filepath.Base(f)])
		}
	}
	if _, perr := fleetlock.ParseRequest(http.Header{}, []byte(`{"client_params":{"id":"a","group":"g"}}`)); perr == nil || perr.Kind != fleetlock.KindInvalidHeader {
		t.Errorf("missing header: %v", perr)
	}
}

func FuzzFleetLockRequest(f *testing.F) {
	files, _ := filepath.Glob("testdata/requests/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "true")
	}
	f.Add([]byte(`{}`), "false")
	kinds := map[string]bool{fleetlock.KindInvalidHeader: true, fleetlock.KindInvalidBody: true, fleetlock.KindInvalidID: true,
		fleetlock.KindInvalidGroup: true, fleetlock.KindTooLarge: true}
	f.Fuzz(func(t *testing.T, body []byte, hv string) {
		h := http.Header{}
		h.Set(fleetlock.HeaderName, hv)
		p, perr := fleetlock.ParseRequest(h, body)
		if perr != nil {
			if !kinds[perr.Kind] || perr.Status < 400 || perr.Status > 499 {
				t.Fatalf("error outside the bounded set: %+v", perr)
			}
			return
		}
		if hv != "true" || locksmith.ValidateID(p.ID) != nil || locksmith.ValidateGroup(p.Group) != nil || len(body) > fleetlock.MaxRequestBody {
			t.Fatalf("accepted invalid request: %+v", p)
		}
		again, _ := json.Marshal(fleetlock.Request{ClientParams: &p})
		if p2, perr := fleetlock.ParseRequest(h, again); perr != nil || p2 != p {
			t.Fatalf("round trip: %+v %v", p2, perr)
		}
	})
}

type reply struct {
	status int
	kind   string
}

func post(t *testing.T, url, path, body string, hdr bool) (reply, http.Header) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+path, strings.NewReader(body))
	if hdr {
		req.Header.Set(fleetlock.HeaderName, "true")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e fleetlock.Error
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(data, &e); err != nil || e.Kind == "" || e.Value == "" {
			t.Fatalf("%s: status %d with a body that is not {kind,value}: %q", path, resp.StatusCode, data)
		}
	} else if len(data) != 0 {
		t.Fatalf("%s: 200 with body %q", path, data)
	}
	return reply{resp.StatusCode, e.Kind}, resp.Header
}

func params(id, group string) string {
	return `{"client_params":{"id":"` + id + `","group":"` + group + `"}}`
}

func TestServerStatusCodes(t *testing.T) {
	e := etcdtest.New(t)
	store := locksmith.NewStore(e.Client, "", nil)
	srv := httptest.NewServer(fleetlock.NewServer(store, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	pre, steady := fleetlock.PathPreReboot, fleetlock.PathSteadyState
	for _, tc := range []struct {
		name       string
		method     string // default POST
		path, body string
		noHeader   bool
		want       reply
	}{
		{name: "no header", path: pre, body: params("a", "default"), noHeader: true, want: reply{400, fleetlock.KindInvalidHeader}},
		{name: "GET", method: http.MethodGet, path: pre, want: reply{405, fleetlock.KindMethodNotAllowed}},
		{name: "other path", path: "/v1/other", body: params("a", "default"), want: reply{404, fleetlock.KindNotFound}},
		{name: "not JSON", path: pre, body: "id=a", want: reply{400, fleetlock.KindInvalidBody}},
		{name: "no client_params", path: pre, body: `{"id":"a"}`, want: reply{400, fleetlock.KindInvalidBody}},
		{name: "empty id", path: pre, body: params("", "default"), want: reply{400, fleetlock.KindInvalidID}},
		{name: "bad group", path: pre, body: params("a", "prod/db"), want: reply{400, fleetlock.KindInvalidGroup}},
		{name: "too large", path: pre, body: params(strings.Repeat("x", 5000), "default"), want: reply{413, fleetlock.KindTooLarge}},
		{name: "lock", path: pre, body: params("a", "default"), want: reply{200, ""}},
		{name: "relock by the holder", path: pre, body: params("a", "default"), want: reply{200, ""}},
		{name: "full", path: pre, body: params("b", "default"), want: reply{409, fleetlock.KindSemaphoreFull}},
		{name: "other group is free", path: pre, body: params("b", "lb.1"), want: reply{200, ""}},
		{name: "steady-state by a non-holder", path: steady, body: params("b", "default"), want: reply{200, ""}},
		{name: "still full", path: pre, body: params("b", "default"), want: reply{409, fleetlock.KindSemaphoreFull}},
		{name: "steady-state by the holder", path: steady, body: params("a", "default"), want: reply{200, ""}},
		{name: "now free", path: pre, body: params("b", "default"), want: reply{200, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got reply
			var h http.Header
			if tc.method == "" {
				got, h = post(t, srv.URL, tc.path, tc.body, !tc.noHeader)
			} else {
				req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				got, h = reply{resp.StatusCode, fleetlock.KindMethodNotAllowed}, resp.Header
				if h.Get("Allow") != http.MethodPost {
					t.Errorf("405 without Allow: POST")
				}
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.status == http.StatusConflict && h.Get("Retry-After") == "" {
				t.Error("409 without Retry-After")
			}
		})
	}
	st, _ := store.State(t.Context(), "default")
	if h, ok := st.Holding("b"); !ok || h.Holder.Note != "fleetlock" {
		t.Fatalf("FleetLock holder not in the shared semaphore: %+v", st)
	}
}

func TestBackendUnavailable(t *testing.T) {
	e := etcdtest.New(t)
	fl := fleetlock.NewServer(locksmith.NewStore(e.NewClient(t), "", nil), slog.New(slog.DiscardHandler))
	fl.Timeout = 500 * time.Millisecond
	srv := httptest.NewServer(fl)
	defer srv.Close()
	e.Stop()
	got, h := post(t, srv.URL, fleetlock.PathPreReboot, params("a", "default"), true)
	if got != (reply{503, fleetlock.KindBackendUnavailable}) || h.Get("Retry-After") == "" {
		t.Fatalf("etcd down: %+v Retry-After %q, want 503 backend_unavailable", got, h.Get("Retry-After"))
	}
}

// failingSem fails every request as *locksmith.Store does when etcd answers with an error of
// the given cause, e.g. no leader after the cluster lost quorum.
type failingSem struct{ cause locksmith.Cause }

func (s failingSem) err(op string) error {
	return &locksmith.EtcdError{Op: op, Group: "default", Cause: s.cause,
		Endpoints: []string{"http://127.0.0.1:2379"}, Err: errors.New("etcdserver: " + s.cause.String())}
}
func (s failingSem) TryLock(context.Context, string, locksmith.Holder) (locksmith.Lock, error) {
	return locksmith.Lock{}, s.err("take slot 0")
}
func (s failingSem) Unlock(context.Context, string, string, string, bool) (locksmith.Holder, error) {
	return locksmith.Holder{}, s.err("read the group")
}

// An etcd that cannot answer now (no leader, unreachable, too slow) is the documented 503 with
// Retry-After, on both paths; an error an operator must fix (credentials) stays a 500.
func TestStoreErrorsByCause(t *testing.T) {
	for _, tc := range []struct {
		cause locksmith.Cause
		want  reply
	}{
		{locksmith.CauseAuth, reply{500, fleetlock.KindInternal}},
		{locksmith.CauseTLS, reply{500, fleetlock.KindInternal}},
		{locksmith.CauseNoLeader, reply{503, fleetlock.KindBackendUnavailable}},
		{locksmith.CauseUnreachable, reply{503, fleetlock.KindBackendUnavailable}},
		{locksmith.CauseTimeout, reply{503, fleetlock.KindBackendUnavailable}},
	} {
		t.Run(tc.cause.String(), func(t *testing.T) {
			srv := httptest.NewServer(fleetlock.NewServer(failingSem{tc.cause}, slog.New(slog.DiscardHandler)))
			defer srv.Close()
			for _, path := range []string{fleetlock.PathPreReboot, fleetlock.PathSteadyState} {
				got, h := post(t, srv.URL, path, params("a", "default"), true)
				if got != tc.want || (got.status == 503) != (h.Get("Retry-After") != "") {
					t.Errorf("%s: %+v Retry-After %q, want %+v (Retry-After with 503 only)", path, got, h.Get("Retry-After"), tc.want)
				}
			}
		})
	}
}

func TestClient(t *testing.T) {
	e := etcdtest.New(t)
	srv := httptest.NewServer(fleetlock.NewServer(locksmith.NewStore(e.Client, "", nil), slog.New(slog.DiscardHandler)))
	defer srv.Close()
	a := &fleetlock.Client{BaseURL: srv.URL + "/", ID: "a"}
	b := &fleetlock.Client{BaseURL: srv.URL, ID: "b", Group: "default"}
	ctx := t.Context()
	if err := a.PreReboot(ctx); err != nil {
		t.Fatal(err)
	}
	err := b.PreReboot(ctx)
	var fe *fleetlock.Error
	if !fleetlock.IsFull(err) || !errors.As(err, &fe) || fe.Status != http.StatusConflict {
		t.Fatalf("b while full: %v", err)
	}
	if err := a.SteadyState(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PreReboot(ctx); err != nil {
		t.Fatal(err)
	}
	bad := &fleetlock.Client{BaseURL: srv.URL, ID: "has space"}
	if err := bad.PreReboot(ctx); !errors.As(err, &fe) || fe.Kind != fleetlock.KindInvalidID || fleetlock.IsFull(err) {
		t.Fatalf("invalid id: %v", err)
	}
	// A server that does not speak FleetLock: the body is kept as the message.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream broke", http.StatusBadGateway)
	}))
	defer plain.Close()
	err = (&fleetlock.Client{BaseURL: plain.URL, ID: "a"}).PreReboot(ctx)
	if !errors.As(err, &fe) || fe.Status != 502 || !strings.Contains(fe.Value, "upstream broke") {
		t.Fatalf("non-FleetLock error: %v", err)
	}
}

func ExampleClient() {
	// A FleetLock server whose group is full.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(fleetlock.Error{Kind: fleetlock.KindSemaphoreFull, Value: "all 1 slots taken"})
	}))
	defer srv.Close()
	c := &fleetlock.Client{BaseURL: srv.URL, ID: "c2a5fe3f52d24cbc", Group: "default"}
	err := c.PreReboot(context.TODO())
	fmt.Println("try later:", fleetlock.IsFull(err))
	// Output: try later: true
}
