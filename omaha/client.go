package omaha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout bounds one HTTP exchange with one server when ClientOptions.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// maxErrorBody is how much of a non-2xx body is read (and discarded) to reuse the connection.
const maxErrorBody = 4 << 10

// ClientOptions configure a Client; the zero value is usable.
type ClientOptions struct {
	// HTTPClient sends the requests; nil means a client of this package's own (no shared
	// default transport state is changed).
	HTTPClient *http.Client
	// Timeout bounds each exchange with one server (connect, send, read the response).
	Timeout time.Duration
	// UserAgent is sent on every request; empty means UpdaterVersion.
	UserAgent string
	// UpdaterVersion is the request version/updaterversion attribute (DefaultUpdaterVersion).
	UpdaterVersion string
	// Credential, when set, is the host credential (see Enroll) sent with every request as
	// "Authorization: Bearer <Credential>".
	Credential string
}

// Client talks Omaha to one or more servers. Every call tries the servers in order and moves
// to the next one on a transient failure (no connection, timeout, HTTP 5xx/408/429); a
// definitive answer (a parsed response, a 4xx) ends the call. A Client is safe for concurrent
// use.
type Client struct {
	servers []string
	http    *http.Client
	timeout time.Duration
	ua      string
	updater string
	cred    string
}

// NewClient returns a client for the given server URLs (absolute http or https URLs of the
// update endpoint, such as http://127.0.0.1:8080/v1/update/), tried in order.
func NewClient(servers []string, opt ClientOptions) (*Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("omaha: new client: no server URL; set SERVER in update.conf")
	}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("omaha: new client: server %q is not an http(s) URL such as https://update.example.com/v1/update/", s)
		}
	}
	c := &Client{
		servers: append([]string(nil), servers...),
		http:    opt.HTTPClient,
		timeout: opt.Timeout,
		ua:      opt.UserAgent,
		updater: opt.UpdaterVersion,
		cred:    opt.Credential,
	}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.updater == "" {
		c.updater = DefaultUpdaterVersion
	}
	if c.ua == "" {
		c.ua = c.updater
	}
	return c, nil
}

// CheckResult is the answer to an update check.
type CheckResult struct {
	// Update is the offer, checked as update_engine checks it; nil means noupdate.
	Update *Update
	// PollInterval is the server's requested next-check interval, 0 if none.
	PollInterval time.Duration
	// Server is the URL that answered.
	Server string
	// Response is the whole parsed response (Flatcar keeps it for extension packages).
	Response *Response
}

// UpdateCheck sends ping + updatecheck + event 3/2 (3/0/44 with opt.Rollback) and returns the
// offer, if any. An updatecheck status other than ok/noupdate, or an offer update_engine would
// reject, is an *Error: transient for error-internal (a server failure or Nebraska throttling),
// permanent otherwise.
func (c *Client) UpdateCheck(ctx context.Context, h Host, opt CheckOptions) (*CheckResult, error) {
	const op = "update check"
	resp, server, err := c.do(ctx, op, h, h.UpdateCheckRequest(c.updater, opt))
	if err != nil {
		return nil, err
	}
	fail := func(status Status, transient bool, err error) error {
		return &Error{Op: op, Server: server, Status: status, Transient: transient, Err: err}
	}
	app := responseApp(resp, h.AppID)
	if app == nil {
		return nil, fail("", false, fmt.Errorf("%w: no <app> for appid %s", ErrInvalidResponse, braced(h.AppID)))
	}
	switch app.Status {
	case StatusUnknownApplication:
		return nil, fail(app.Status, false, &UnknownAppError{AppID: braced(h.AppID)})
	case StatusUnknownApplicationOrGroup:
		return nil, fail(app.Status, false, &UnknownGroupError{AppID: braced(h.AppID), Track: h.Track})
	}
	if app.Status != "" && app.Status != StatusOK && app.UpdateCheck == nil {
		return nil, fail(app.Status, app.Status == StatusInternalError, fmt.Errorf("%w: app status %q", ErrInvalidResponse, app.Status))
	}
	uc := app.UpdateCheck
	if uc == nil {
		return nil, fail("", false, fmt.Errorf("%w: no <updatecheck>", ErrInvalidResponse))
	}
	res := &CheckResult{Server: server, Response: resp, PollInterval: time.Duration(uc.PollInterval) * time.Second}
	switch uc.Status {
	case StatusNoUpdate:
		return res, nil
	case StatusOK:
		u, err := uc.Update()
		if err != nil {
			return nil, fail(uc.Status, false, err)
		}
		res.Update = u
		return res, nil
	}
	return nil, fail(uc.Status, uc.Status == StatusInternalError,
		fmt.Errorf("%w: updatecheck status %q (app status %q)", ErrInvalidResponse, uc.Status, app.Status))
}

// Ping sends a ping-only request.
func (c *Client) Ping(ctx context.Context, h Host) error {
	_, _, err := c.do(ctx, "ping", h, h.PingRequest(c.updater))
	return err
}

// Event reports one event. Like update_engine, it does not judge the acknowledgement: any
// well-formed response counts as delivered.
func (c *Client) Event(ctx context.Context, h Host, ev Event) error {
	_, _, err := c.do(ctx, "event "+eventName(ev), h, h.EventRequest(c.updater, ev))
	return err
}

func eventName(ev Event) string {
	return fmt.Sprintf("%d/%d", int(ev.Type), int(ev.Result))
}

func responseApp(resp *Response, appID string) *App {
	if a := resp.App(appID); a != nil {
		return a
	}
	if len(resp.Apps) == 1 {
		return resp.Apps[0]
	}
	return nil
}

// do validates the request, then posts it to each server in turn until one answers
// definitively.
func (c *Client) do(ctx context.Context, op string, h Host, req *Request) (*Response, string, error) {
	if err := req.Apps[0].Validate(); err != nil {
		return nil, "", &Error{Op: op, Err: fmt.Errorf("host identity: %w", err)}
	}
	body, err := req.Marshal()
	if err != nil {
		return nil, "", &Error{Op: op, Err: err}
	}
	var last *Error
	for _, server := range c.servers {
		resp, err := c.post(ctx, op, server, body)
		if err == nil {
			return resp, server, nil
		}
		last = err
		if !err.Transient || ctx.Err() != nil {
			break
		}
	}
	return nil, last.Server, last
}

func (c *Client) post(ctx context.Context, op, server string, body []byte) (*Response, *Error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fail := func(code int, transient bool, err error) *Error {
		return &Error{Op: op, Server: server, HTTPStatus: code, Transient: transient, Err: err}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, server, bytes.NewReader(body))
	if err != nil {
		return nil, fail(0, false, err)
	}
	hreq.Header.Set("Content-Type", ContentType)
	hreq.Header.Set("User-Agent", c.ua)
	if c.cred != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.cred)
	}
	res, err := c.http.Do(hreq)
	if err != nil {
		return nil, fail(0, true, err)
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
		s := res.StatusCode
		return nil, fail(s, s >= 500 || s == http.StatusRequestTimeout || s == http.StatusTooManyRequests,
			fmt.Errorf("server answered %s: %.200q", res.Status, bytes.TrimSpace(snippet)))
	}
	resp, err := ParseResponse(res.Body)
	if err != nil {
		// A body cut short by the network is transient; a body that arrived and is not an
		// Omaha response is not.
		transient := !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupportedProtocol)
		return nil, fail(0, transient, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxErrorBody))
	return resp, nil
}

// Error is a failed exchange. Transient failures (no connection, timeout, HTTP 5xx, 408, 429,
// Omaha error-internal) are worth retrying later with backoff; the others need a change on
// the server or in the host's configuration.
type Error struct {
	Op         string // "update check", "ping", "event 13/1"
	Server     string // the last server tried, "" if none was
	HTTPStatus int    // non-2xx HTTP status, 0 otherwise
	Status     Status // Omaha error status the server answered, "" otherwise
	Transient  bool
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("omaha: " + e.Op)
	if e.Server != "" {
		b.WriteString(" to " + e.Server)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	if e.Transient {
		b.WriteString(" (transient; will retry)")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Code is the update_engine error code to report for this failure: 2000+HTTP status for a
// non-2xx answer, 30 for an empty body, 31 for a body that is not Omaha XML, 34 for an error
// status or an unacceptable offer, 2 when no server answered.
func (e *Error) Code() ErrorCode {
	switch {
	case e.HTTPStatus != 0:
		return min(ErrorCodeOmahaRequestHTTPResponseBase+ErrorCode(e.HTTPStatus), errorCodeHTTPMax)
	case e.Status != "" || errors.Is(e.Err, ErrInvalidResponse) || errors.Is(e.Err, ErrUnsupportedProtocol):
		return ErrorCodeOmahaResponseInvalid
	case errors.Is(e.Err, errEmptyDocument):
		return ErrorCodeOmahaRequestEmptyResponseError
	case errors.Is(e.Err, ErrMalformed) || errors.Is(e.Err, ErrTooLarge):
		return ErrorCodeOmahaRequestXMLParseError
	}
	return ErrorCodeOmahaRequestError
}

// UnknownAppError is an update check the server answered with app status
// error-unknownApplication: it serves no app with this id. Fix the host's app id (its release
// file) or create the app on the server. It is the Err of an *Error (use errors.As).
type UnknownAppError struct {
	AppID string // as sent, in braces
}

func (e *UnknownAppError) Error() string {
	return fmt.Sprintf("the server knows no app %s (%s): create it there or fix the host's app id", e.AppID, StatusUnknownApplication)
}

// Unwrap makes errors.Is(err, ErrInvalidResponse) hold, as for every refused check.
func (e *UnknownAppError) Unwrap() error { return ErrInvalidResponse }

// UnknownGroupError is an update check the server answered as Nebraska does for a track it
// does not know: app status error-unknownApplicationOrGroup (with updatecheck error-internal).
// Fix GROUP= in the host's update.conf or create the group on the server. It is the Err of an
// *Error (use errors.As).
type UnknownGroupError struct {
	AppID string // as sent, in braces
	Track string // the host's GROUP
}

func (e *UnknownGroupError) Error() string {
	return fmt.Sprintf("the server knows no group %q for app %s (%s): set GROUP= in update.conf to a group or channel the server has, or create it there",
		e.Track, e.AppID, StatusUnknownApplicationOrGroup)
}

// Unwrap makes errors.Is(err, ErrInvalidResponse) hold, as for every refused check.
func (e *UnknownGroupError) Unwrap() error { return ErrInvalidResponse }

// IsTransient reports whether err is an *Error worth retrying later.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}
