package admin

import (
	"context"
	"net/http"
)

// CreateEnrollToken creates an enrollment token; its secret is in the answer only.
func (c *Client) CreateEnrollToken(ctx context.Context, app string, t EnrollTokenCreate) (EnrollTokenCreated, error) {
	var out EnrollTokenCreated
	return out, c.send(ctx, http.MethodPost, appPath(app, "enroll-tokens"), t, &out)
}

// EnrollTokens lists an app's enrollment tokens, oldest first.
func (c *Client) EnrollTokens(ctx context.Context, app string) ([]EnrollToken, error) {
	var out []EnrollToken
	return out, c.get(ctx, appPath(app, "enroll-tokens"), nil, &out)
}

// RevokeEnrollToken revokes an enrollment token: no more hosts enroll with it (enrolled hosts
// keep their credentials).
func (c *Client) RevokeEnrollToken(ctx context.Context, app, id string) (EnrollToken, error) {
	var out EnrollToken
	return out, c.send(ctx, http.MethodDelete, appPath(app, "enroll-tokens", id), struct{}{}, &out)
}

// UnenrollHost deletes a host's credential: it must enroll again before a group that requires
// enrollment trusts it.
func (c *Client) UnenrollHost(ctx context.Context, app, machineID string) (HostCredential, error) {
	var out HostCredential
	return out, c.send(ctx, http.MethodDelete, appPath(app, "hosts", machineID, "credential"), struct{}{}, &out)
}
