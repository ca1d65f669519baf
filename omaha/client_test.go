package omaha

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// testHost is the host of testdata/request-*.xml (the request update_engine builds in omaha_request_action.cc).
func testHost() Host {
	return Host{
		AppID: "e96281a6-d1af-4bde-9a0a-97b76e56dc57", MachineID: "639c3d1041b94d7c915c18174eeeb154",
		BootID: "60eb8c4b-919d-422f-9d4f-8fda10c50ab8", Version: "4081.2.0", Track: "stable",
		Board: "amd64-usr", OEM: "azure", OEMVersion: "2.9.1.1", AlephVersion: "3815.2.0",
		MachineAlias: "worker-07", Arch: "x86_64",
	}
}

// recorder is an Omaha server on loopback that records what it receives and answers with
// a fixed status and body.
type recorder struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*Request
	headers  []http.Header
}

func newRecorder(t *testing.T, status int, body string) *recorder {
	t.Helper()
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		req, err := ParseRequest(hr.Body)
		if err != nil {
			t.Errorf("server got an unparsable request: %v", err)
		}
		r.mu.Lock()
		r.requests = append(r.requests, req)
		r.headers = append(r.headers, hr.Header.Clone())
		r.mu.Unlock()
		w.Header().Set("Content-Type", ContentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) got() []*Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Request(nil), r.requests...)
}

func newTestClient(t *testing.T, opt ClientOptions, servers ...string) *Client {
	t.Helper()
	c, err := NewClient(servers, opt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// closedURL is a loopback URL nothing listens on.
func closedURL(t *testing.T) string {
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL + "/v1/update/"
	s.Close()
	return u
}

func TestNewClientRejectsBadServers(t *testing.T) {
	for _, servers := range [][]string{nil, {""}, {"disabled"}, {"ftp://x/"}, {"http:///v1/update/"}} {
		if _, err := NewClient(servers, ClientOptions{}); err == nil {
			t.Errorf("NewClient(%q) succeeded", servers)
		}
	}
}

func TestUpdateCheckFailures(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		transient bool
		code      ErrorCode
		want      error
	}{
		{name: "bad request", status: 400, body: "no", code: 2400},
		{name: "not found", status: 404, code: 2404},
		{name: "server error", status: 503, transient: true, code: 2503},
		{name: "too many requests", status: 429, transient: true, code: 2429},
		{name: "empty body", status: 200, code: ErrorCodeOmahaRequestEmptyResponseError, want: ErrMalformed},
		{name: "html", status: 200, body: "<html><body>proxy login</body></html>", code: ErrorCodeOmahaRequestXMLParseError, want: ErrMalformed},
		{name: "huge", status: 200, body: `<response protocol="3.0">` + strings.Repeat(" ", MaxResponseBytes), code: ErrorCodeOmahaRequestXMLParseError, want: ErrTooLarge},
		{name: "protocol 2", status: 200, body: `<response protocol="2.0"></response>`, code: ErrorCodeOmahaResponseInvalid, want: ErrUnsupportedProtocol},
		{name: "no app", status: 200, body: `<response protocol="3.0"></response>`, code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
		{name: "no updatecheck", status: 200, body: `<response protocol="3.0"><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok"></app></response>`, code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
		{name: "unknown application", status: 200, body: string(readTestdata(t, "response-error-unknown-application.xml")), code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
		{name: "error-internal", status: 200, body: string(readTestdata(t, "response-error-internal.xml")), transient: true, code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
		{name: "nebraska throttled", status: 200, body: string(readTestdata(t, "response-flatcar-throttled.xml")), transient: true, code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
		{name: "ok without postinstall", status: 200, body: strings.Replace(string(readTestdata(t, "response-flatcar-ok.xml")), "postinstall", "preinstall", 1), code: ErrorCodeOmahaResponseInvalid, want: ErrInvalidResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRecorder(t, tt.status, tt.body)
			c := newTestClient(t, ClientOptions{}, srv.URL+"/v1/update/")
			res, err := c.UpdateCheck(t.Context(), testHost(), CheckOptions{})
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("UpdateCheck = %+v, %v; want an *Error", res, err)
			}
			if oe.Transient != tt.transient || IsTransient(err) != tt.transient {
				t.Errorf("transient = %v, want %v (%v)", oe.Transient, tt.transient, err)
			}
			if got := oe.Code(); got != tt.code {
				t.Errorf("Code() = %v, want %v (%v)", got, tt.code, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v does not wrap %v", err, tt.want)
			}
			if oe.Server != srv.URL+"/v1/update/" || !strings.Contains(err.Error(), "update check") {
				t.Errorf("error does not name the operation and server: %v", err)
			}
		})
	}
}

func TestUpdateCheckNoUpdate(t *testing.T) {
	srv := newRecorder(t, 200, string(readTestdata(t, "response-flatcar-noupdate.xml")))
	c := newTestClient(t, ClientOptions{UpdaterVersion: "twinslot-updated-9.9", UserAgent: "test-agent/1"}, srv.URL+"/v1/update/")
	res, err := c.UpdateCheck(t.Context(), testHost(), CheckOptions{PreviousVersion: "3975.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Update != nil || res.PollInterval != 0 || res.Server != srv.URL+"/v1/update/" {
		t.Errorf("result = %+v, want noupdate", res)
	}
	reqs := srv.got()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	if h := srv.headers[0]; h.Get("User-Agent") != "test-agent/1" || h.Get("Content-Type") != ContentType {
		t.Errorf("headers = %v", h)
	}
	req := reqs[0]
	if req.Version != "twinslot-updated-9.9" || req.InstallSource != InstallSourceScheduler || req.OS.ServicePack != "4081.2.0_x86_64" {
		t.Errorf("request = %+v os %+v", req, req.OS)
	}
	a := req.Apps[0]
	if a.AppID != "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" || a.BootID != "{60eb8c4b-919d-422f-9d4f-8fda10c50ab8}" ||
		a.MachineID != testHost().MachineID || a.MachineAlias != "worker-07" || a.Lang != "en-US" {
		t.Errorf("app = %+v", a)
	}
	if a.Ping == nil || a.Ping.Active != 1 || a.UpdateCheck == nil || len(a.Events) != 1 {
		t.Fatalf("not an update check: %+v", a)
	}
	if ev := *a.Events[0]; ev != (Event{Type: 3, Result: 2, PreviousVersion: "3975.2.2"}) {
		t.Errorf("event = %+v, want 3/2 previousversion=3975.2.2", ev)
	}
}

func TestUpdateCheckOffer(t *testing.T) {
	body := strings.Replace(string(readTestdata(t, "response-flatcar-ok.xml")), `<updatecheck status="ok">`, `<updatecheck status="ok" PollInterval="3600">`, 1)
	srv := newRecorder(t, 200, body)
	c := newTestClient(t, ClientOptions{}, srv.URL+"/v1/update/")
	res, err := c.UpdateCheck(t.Context(), testHost(), CheckOptions{Rollback: true, Interactive: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Update == nil || res.Update.Version != "4152.2.0" || res.Update.PackageName != "flatcar_production_update.gz" || res.Update.Size != 481234567 {
		t.Errorf("offer = %+v", res.Update)
	}
	if res.PollInterval != time.Hour {
		t.Errorf("PollInterval = %v, want 1h", res.PollInterval)
	}
	if len(res.Response.Apps[0].UpdateCheck.Manifest.Packages) != 2 {
		t.Error("the whole response (with the extension package) is not kept")
	}
	req := srv.got()[0]
	if req.InstallSource != InstallSourceOnDemand {
		t.Errorf("installsource = %q", req.InstallSource)
	}
	if ev := *req.Apps[0].Events[0]; ev != (Event{Type: 3, Result: 0, ErrorCode: ErrorCodeRollback}) {
		t.Errorf("event = %+v, want 3/0/44", ev)
	}
}

func TestClientFailover(t *testing.T) {
	okBody := string(readTestdata(t, "response-flatcar-noupdate.xml"))
	t.Run("refused then 503 then ok", func(t *testing.T) {
		bad := newRecorder(t, 503, "overloaded")
		good := newRecorder(t, 200, okBody)
		c := newTestClient(t, ClientOptions{}, closedURL(t), bad.URL, good.URL)
		res, err := c.UpdateCheck(t.Context(), testHost(), CheckOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Server != good.URL || len(bad.got()) != 1 || len(good.got()) != 1 {
			t.Errorf("answered by %s; bad saw %d, good saw %d", res.Server, len(bad.got()), len(good.got()))
		}
	})
	t.Run("4xx stops", func(t *testing.T) {
		bad := newRecorder(t, 400, "bad")
		good := newRecorder(t, 200, okBody)
		c := newTestClient(t, ClientOptions{}, bad.URL, good.URL)
		if err := c.Ping(t.Context(), testHost()); IsTransient(err) || err == nil {
			t.Fatalf("Ping = %v, want a permanent error", err)
		}
		if len(good.got()) != 0 {
			t.Error("a 400 answer failed over to the next server")
		}
	})
	t.Run("malformed stops", func(t *testing.T) {
		bad := newRecorder(t, 200, "<html>")
		good := newRecorder(t, 200, okBody)
		c := newTestClient(t, ClientOptions{}, bad.URL, good.URL)
		if err := c.Ping(t.Context(), testHost()); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Ping = %v, want ErrMalformed", err)
		}
		if len(good.got()) != 0 {
			t.Error("a malformed answer failed over to the next server")
		}
	})
	t.Run("all down", func(t *testing.T) {
		c := newTestClient(t, ClientOptions{}, closedURL(t), closedURL(t))
		err := c.Event(t.Context(), testHost(), Event{Type: 13, Result: 1})
		var oe *Error
		if !errors.As(err, &oe) || !oe.Transient || oe.Code() != ErrorCodeOmahaRequestError {
			t.Fatalf("Event = %v, want transient OmahaRequestError", err)
		}
	})
	t.Run("timeout then ok", func(t *testing.T) {
		release := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			select { // never answers in time
			case <-r.Context().Done():
			case <-release:
			}
		}))
		t.Cleanup(slow.Close)
		t.Cleanup(func() { close(release) }) // runs before slow.Close
		good := newRecorder(t, 200, okBody)
		c := newTestClient(t, ClientOptions{Timeout: 50 * time.Millisecond}, slow.URL, good.URL)
		if err := c.Ping(t.Context(), testHost()); err != nil {
			t.Fatalf("Ping = %v, want failover to the second server", err)
		}
	})
}

func TestClientContextCanceled(t *testing.T) {
	srv := newRecorder(t, 200, string(readTestdata(t, "response-ping-ack.xml")))
	c := newTestClient(t, ClientOptions{}, srv.URL, srv.URL)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Ping(ctx, testHost()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping = %v, want context.Canceled", err)
	}
	if n := len(srv.got()); n != 0 {
		t.Errorf("server saw %d requests after cancel", n)
	}
}

func TestClientRefusesBadHostIdentity(t *testing.T) {
	srv := newRecorder(t, 200, string(readTestdata(t, "response-ping-ack.xml")))
	c := newTestClient(t, ClientOptions{}, srv.URL)
	h := testHost()
	h.MachineID = "not-a-machine-id"
	err := c.Ping(t.Context(), h)
	if !errors.Is(err, ErrInvalidField) || IsTransient(err) {
		t.Fatalf("Ping = %v, want a permanent ErrInvalidField", err)
	}
	if len(srv.got()) != 0 {
		t.Error("an invalid identity was sent")
	}
}

func TestPingAndEventShapes(t *testing.T) {
	srv := newRecorder(t, 200, string(readTestdata(t, "response-event-ack.xml")))
	c := newTestClient(t, ClientOptions{}, srv.URL)
	if err := c.Ping(t.Context(), testHost()); err != nil {
		t.Fatal(err)
	}
	code := ErrorCodePostinstallRunnerError | ErrorCodeFlagTestOmahaURL
	if err := c.Event(t.Context(), testHost(), ErrorEvent(code)); err != nil {
		t.Fatal(err)
	}
	if err := c.Event(t.Context(), testHost(), ErrorEvent(ErrorCodeOmahaUpdateDeferredForBackoff)); err != nil {
		t.Fatal(err)
	}
	reqs := srv.got()
	p := reqs[0].Apps[0]
	if p.Ping == nil || p.UpdateCheck != nil || len(p.Events) != 0 {
		t.Errorf("ping request = %+v", p)
	}
	if e := reqs[1].Apps[0]; e.Ping != nil || e.UpdateCheck != nil || len(e.Events) != 1 || *e.Events[0] != (Event{Type: 3, Result: 0, ErrorCode: code}) {
		t.Errorf("error event request = %+v", e)
	}
	if ev := *reqs[2].Apps[0].Events[0]; ev.Result != EventResultUpdateDeferred {
		t.Errorf("backoff event = %+v, want result 9", ev)
	}
}
