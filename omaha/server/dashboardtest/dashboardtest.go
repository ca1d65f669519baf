package dashboardtest

import (
	"context"
	"iter"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Chromium returns the path of a Chromium binary, or skips t when there is none or -short
// is set.
func Chromium(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the headless Chromium dashboard test")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found in PATH: skipping the dashboard browser test (apt-get install chromium)")
	return ""
}

// Browser is a headless Chromium tab that may reach only one loopback origin.
type Browser struct {
	Ctx context.Context // the tab's chromedp context; ends when the test ends or the budget runs out

	origin string
	user   string
	pass   string

	mu      sync.Mutex
	outside []string
}

// NewBrowser starts Chromium for a test of the server at origin (http://127.0.0.1:port) and
// answers its HTTP Basic challenges with user and pass. The browser lives until the test ends
// or budget passes, whichever is first.
func NewBrowser(t testing.TB, origin, user, pass string, budget time.Duration) *Browser {
	t.Helper()
	exe := Chromium(t)
	u, err := url.Parse(origin)
	if err != nil || u.Hostname() != "127.0.0.1" {
		t.Fatalf("dashboardtest: origin %q is not an http://127.0.0.1 URL", origin)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(1400, 1200),
		// Nothing but the server: every other name resolves to nothing, no proxy.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("dns-prefetch-disable", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	t.Cleanup(cancel)
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(ctx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelTab)
	b := &Browser{Ctx: ctx, origin: u.Scheme + "://" + u.Host, user: user, pass: pass}
	// The first command starts the browser and binds it to ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("dashboardtest: start %s: %v", exe, err)
	}
	go serve(chromedp.Events(ctx, fetch.RequestPaused), func(ev fetch.EventRequestPaused) {
		if origin := originOf(ev.Request); origin != b.origin {
			b.mu.Lock()
			b.outside = append(b.outside, ev.Request.URL)
			b.mu.Unlock()
			chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
			return
		}
		chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
	})
	go serve(chromedp.Events(ctx, fetch.AuthRequired), func(ev fetch.EventAuthRequired) {
		resp := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseCancelAuth}
		if originOf(ev.Request) == b.origin && ev.AuthChallenge != nil && strings.EqualFold(ev.AuthChallenge.Scheme, "basic") {
			resp = &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: b.user, Password: b.pass}
		}
		chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: resp})
	})
	yes := true
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &yes}); err != nil {
		t.Fatalf("dashboardtest: enable request interception: %v", err)
	}
	return b
}

// serve runs handle for each event until the browser goes away.
func serve[E any](events iter.Seq2[E, error], handle func(E)) {
	for ev, err := range events {
		if err != nil {
			return
		}
		handle(ev)
	}
}

func originOf(r *network.Request) string {
	u, err := url.Parse(r.URL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// Outside returns the URLs of the requests the page tried to make to anything but the server.
func (b *Browser) Outside() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.outside...)
}
