package omaha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Host enrollment is twinslot's extension of the update endpoint (Flatcar's update_engine
// knows nothing of it): an agent posts an EnrollRequest as JSON to EnrollURL(server) and gets
// an EnrollResponse whose Credential it sends with every later request as
// "Authorization: Bearer <credential>" (ClientOptions.Credential).

// EnrollRequest exchanges an enrollment token for a host credential.
type EnrollRequest struct {
	AppID     string `json:"app_id,omitempty"` // optional: the server checks it is the token's app
	MachineID string `json:"machine_id"`
	Token     string `json:"token"`
}

// EnrollResponse carries the host credential (shown once; the server keeps its hash).
type EnrollResponse struct {
	AppID      string `json:"app_id"`
	MachineID  string `json:"machine_id"`
	GroupID    string `json:"group_id,omitempty"` // the credential counts only in this group ("" = any)
	Credential string `json:"credential"`
}

// maxEnrollResponse bounds an enrollment answer.
const maxEnrollResponse = 16 << 10

// EnrollURL is where the server of update URL server (…/v1/update/) takes enrollments:
// …/v1/enroll.
func EnrollURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("omaha: server %q is not an http(s) URL such as https://update.example.com/v1/update/", server)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.ResolveReference(&url.URL{Path: "../enroll"}).String(), nil
}

// EnrollError is a refused or failed enrollment. Transient ones (no connection, HTTP 5xx) may
// succeed later with the same token; the others need a new token or a fixed configuration.
type EnrollError struct {
	Server     string
	HTTPStatus int // 0 when no answer arrived
	Transient  bool
	Err        error
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("omaha: enroll at %s: %v", e.Server, e.Err)
}

func (e *EnrollError) Unwrap() error { return e.Err }

// Enroll exchanges req at the servers of c, in order, until one answers definitively.
func (c *Client) Enroll(ctx context.Context, req EnrollRequest) (EnrollResponse, error) {
	if err := CheckMachineID(req.MachineID); err != nil {
		return EnrollResponse{}, fmt.Errorf("omaha: enroll: %w", err)
	}
	if req.Token == "" {
		return EnrollResponse{}, errors.New("omaha: enroll: no enrollment token")
	}
	body, err := json.Marshal(req)
	if err != nil {
		return EnrollResponse{}, err
	}
	var last *EnrollError
	for _, server := range c.servers {
		resp, err := c.enrollAt(ctx, server, body)
		if err == nil {
			return resp, nil
		}
		last = err
		if !err.Transient || ctx.Err() != nil {
			break
		}
	}
	return EnrollResponse{}, last
}

func (c *Client) enrollAt(ctx context.Context, server string, body []byte) (EnrollResponse, *EnrollError) {
	fail := func(code int, transient bool, err error) *EnrollError {
		return &EnrollError{Server: server, HTTPStatus: code, Transient: transient, Err: err}
	}
	target, err := EnrollURL(server)
	if err != nil {
		return EnrollResponse{}, fail(0, false, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return EnrollResponse{}, fail(0, false, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", c.ua)
	res, err := c.http.Do(hreq)
	if err != nil {
		return EnrollResponse{}, fail(0, true, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxEnrollResponse))
	if err != nil {
		return EnrollResponse{}, fail(0, true, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		s := res.StatusCode
		return EnrollResponse{}, fail(s, s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout,
			fmt.Errorf("server answered %s: %.300s", res.Status, msg))
	}
	var out EnrollResponse
	if err := json.Unmarshal(b, &out); err != nil || out.Credential == "" {
		return EnrollResponse{}, fail(http.StatusOK, false, fmt.Errorf("the answer is not an enrollment response: %.200q", b))
	}
	return out, nil
}
