package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client is a FleetLock client for one id in one group.
type Client struct {
	// BaseURL is the server's URL; the operation paths are appended ("https://lock.example/").
	BaseURL string
	ID      string
	Group   string
	// HTTP is the client used; nil means http.DefaultClient (callers set timeouts on ctx).
	HTTP *http.Client
}

// PreReboot takes (or re-takes) a reboot slot. A full group gives an *Error whose Full is true.
func (c *Client) PreReboot(ctx context.Context) error { return c.do(ctx, PathPreReboot) }

// SteadyState releases the slot if this id holds one.
func (c *Client) SteadyState(ctx context.Context) error { return c.do(ctx, PathSteadyState) }

func (c *Client) do(ctx context.Context, path string) error {
	group := c.Group
	if group == "" {
		group = DefaultGroup
	}
	body, err := json.Marshal(Request{ClientParams: &Params{ID: c.ID, Group: group}})
	if err != nil {
		return fmt.Errorf("fleetlock: encode request: %w", err)
	}
	url := strings.TrimSuffix(c.BaseURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("fleetlock: %s: %w", path, err)
	}
	req.Header.Set(HeaderName, "true")
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fleetlock: POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	if err != nil {
		return fmt.Errorf("fleetlock: POST %s: read response: %w", url, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(data, e) != nil || e.Kind == "" {
		e.Kind, e.Value = "unknown", strings.TrimSpace(string(data))
	}
	return e
}

// IsFull reports whether err is a FleetLock "all slots taken" answer.
func IsFull(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Full()
}
