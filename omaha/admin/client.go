package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// MaxResponseBytes caps a JSON response the client reads (an instance listing of 100k hosts is
// about 50 MiB).
const MaxResponseBytes = 256 << 20

// Error is an error answer from the server.
type Error struct {
	StatusCode int
	Message    string
	// Gates are the checks of the promotion gate that refused a promotion (status 409).
	Gates []GateCheck
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("server answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("server answered %d: %s", e.StatusCode, e.Message)
}

// Is matches a sentinel with the same status code (see ErrNotFound …).
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Message == "" && t.StatusCode == e.StatusCode
}

// Sentinels for errors.Is.
var (
	ErrBadRequest   = &Error{StatusCode: http.StatusBadRequest}
	ErrUnauthorized = &Error{StatusCode: http.StatusUnauthorized}
	ErrForbidden    = &Error{StatusCode: http.StatusForbidden}
	ErrNotFound     = &Error{StatusCode: http.StatusNotFound}
	ErrConflict     = &Error{StatusCode: http.StatusConflict}
	ErrRefused      = &Error{StatusCode: http.StatusUnprocessableEntity} // payload did not verify
)

// Client talks to an omahad admin API.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// NewClient returns a client for the server at baseURL (e.g. http://127.0.0.1:8080) using token.
// hc may be nil for a client without timeouts (uploads can take long; use ctx to bound calls).
func NewClient(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin: server URL %q: want http(s)://host[:port]", baseURL)
	}
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, token: token, hc: hc}, nil
}

// do sends a request and decodes a JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body io.Reader, size int64, contentType string, out any) error {
	u := *c.base
	u.Path += path
	u.RawPath = ""
	if query != nil {
		u.RawQuery = query.Encode()
	}
	if body != nil {
		body = io.NopCloser(body) // the caller's file stays open
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("admin: %s %s: read answer: %w", method, path, err)
	}
	if len(data) > MaxResponseBytes {
		return fmt.Errorf("admin: %s %s: answer larger than %d bytes", method, path, MaxResponseBytes)
	}
	if resp.StatusCode/100 != 2 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(data[:min(len(data), 512)]))
		}
		return &Error{StatusCode: resp.StatusCode, Message: eb.Error, Gates: eb.Gates}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, query url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, query, nil, 0, "", out)
}

func (c *Client) send(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("admin: encode request: %w", err)
	}
	return c.do(ctx, method, path, nil, bytes.NewReader(b), int64(len(b)), "application/json", out)
}

func appPath(app string, rest ...string) string {
	p := "/api/v1/apps/" + url.PathEscape(app)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// Apps lists the apps.
func (c *Client) Apps(ctx context.Context) ([]App, error) {
	var out []App
	return out, c.get(ctx, "/api/v1/apps", nil, &out)
}

// App returns one app.
func (c *Client) App(ctx context.Context, id string) (App, error) {
	var out App
	return out, c.get(ctx, appPath(id), nil, &out)
}

// CreateApp creates an app (with channels alpha, beta, stable and their default groups).
func (c *Client) CreateApp(ctx context.Context, a App) (App, error) {
	var out App
	return out, c.send(ctx, http.MethodPost, "/api/v1/apps", a, &out)
}

// SetTrust replaces an app's payload trust root (JSON).
func (c *Client) SetTrust(ctx context.Context, id string, trust []byte) (App, error) {
	var out App
	return out, c.do(ctx, http.MethodPut, appPath(id, "trust"), nil, bytes.NewReader(trust), int64(len(trust)), "application/json", &out)
}

// Channels lists an app's channels with their current packages.
func (c *Client) Channels(ctx context.Context, app string) ([]Channel, error) {
	var out []Channel
	return out, c.get(ctx, appPath(app, "channels"), nil, &out)
}

// SetChannel changes a channel's external download URL.
func (c *Client) SetChannel(ctx context.Context, app, channel string, ch ChannelChange) (Channel, error) {
	var out Channel
	return out, c.send(ctx, http.MethodPut, appPath(app, "channels", channel), ch, &out)
}

// Packages lists an app's packages, newest first.
func (c *Client) Packages(ctx context.Context, app string) ([]Package, error) {
	var out []Package
	return out, c.get(ctx, appPath(app, "packages"), nil, &out)
}

// PublishOptions says where a published payload goes.
type PublishOptions struct {
	Name    string // file name clients download (default: the server's "update.tsp")
	Channel string // point this channel at the package ("" = publish only)
	// URL, when set, is where clients download the file instead of from omahad; the upload is
	// still verified, but not kept.
	URL string
}

// Publish uploads a payload file of size bytes. The server verifies it against the app's trust
// root and refuses (ErrRefused) what does not verify.
func (c *Client) Publish(ctx context.Context, app string, body io.Reader, size int64, o PublishOptions) (Package, error) {
	q := url.Values{}
	for k, v := range map[string]string{"name": o.Name, "channel": o.Channel, "url": o.URL} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out Package
	return out, c.do(ctx, http.MethodPost, appPath(app, "packages"), q, body, size, "application/octet-stream", &out)
}

// UploadFile uploads a file of size bytes for a later FlatcarPackage and returns its size and
// hashes as the server computed them.
func (c *Client) UploadFile(ctx context.Context, app string, body io.Reader, size int64) (File, error) {
	var out File
	return out, c.do(ctx, http.MethodPost, appPath(app, "files"), nil, body, size, "application/octet-stream", &out)
}

// PublishFlatcar creates a Flatcar package (see FlatcarPackage) and, with p.Channel, points that
// channel at it. The server refuses (ErrRefused) files that are not where, or not what, p says.
func (c *Client) PublishFlatcar(ctx context.Context, app string, p FlatcarPackage) (Package, error) {
	var out Package
	return out, c.send(ctx, http.MethodPost, appPath(app, "flatcar"), p, &out)
}

// Promote points channel p.To at the packages of p.Version that p.From carries.
func (c *Client) Promote(ctx context.Context, app string, p Promote) ([]Package, error) {
	var out []Package
	return out, c.send(ctx, http.MethodPost, appPath(app, "promote"), p, &out)
}

// Withdraw withdraws every package of a version; channels fall back to their previous package.
func (c *Client) Withdraw(ctx context.Context, app, version string) ([]Package, error) {
	var out []Package
	return out, c.send(ctx, http.MethodPost, appPath(app, "withdraw"), Withdraw{Version: version}, &out)
}

// Groups lists an app's groups.
func (c *Client) Groups(ctx context.Context, app string) ([]Group, error) {
	var out []Group
	return out, c.get(ctx, appPath(app, "groups"), nil, &out)
}

// Group returns a group by id or name.
func (c *Client) Group(ctx context.Context, app, group string) (Group, error) {
	var out Group
	return out, c.get(ctx, appPath(app, "groups", group), nil, &out)
}

// CreateGroup creates a group.
func (c *Client) CreateGroup(ctx context.Context, app string, g Group) (Group, error) {
	var out Group
	return out, c.send(ctx, http.MethodPost, appPath(app, "groups"), g, &out)
}

// UpdateGroup changes a group (by id or name).
func (c *Client) UpdateGroup(ctx context.Context, app, group string, ch GroupChange) (Group, error) {
	var out Group
	return out, c.send(ctx, http.MethodPatch, appPath(app, "groups", group), ch, &out)
}

// InstanceQuery filters Instances; empty fields match all.
type InstanceQuery struct {
	Group   string // id or name
	Version string
	State   string
	Search  string // part of a machine id or alias, any case
	After   string // machine id to continue after
	Limit   int
}

// Instances lists hosts of an app, ordered by machine id.
func (c *Client) Instances(ctx context.Context, app string, q InstanceQuery) ([]Instance, error) {
	v := url.Values{}
	for k, s := range map[string]string{"group": q.Group, "version": q.Version, "state": q.State, "q": q.Search, "after": q.After} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out []Instance
	return out, c.get(ctx, appPath(app, "instances"), v, &out)
}

// MachineEvents lists the events one host reported, newest first.
func (c *Client) MachineEvents(ctx context.Context, app, machineID string, limit int) ([]Event, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out []Event
	return out, c.get(ctx, appPath(app, "instances", machineID, "events"), v, &out)
}

// Events lists an app's events, newest first; failures selects only errors and rollbacks.
func (c *Client) Events(ctx context.Context, app string, failures bool, limit int) ([]Event, error) {
	v := url.Values{}
	if failures {
		v.Set("failures", "1")
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out []Event
	return out, c.get(ctx, appPath(app, "events"), v, &out)
}

// Status returns an app's channels and per-group counts by version and state.
func (c *Client) Status(ctx context.Context, app string) (Status, error) {
	var out Status
	return out, c.get(ctx, appPath(app, "status"), nil, &out)
}
