package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/store"
)

// send makes a raw admin request as a browser or a script would.
func send(t *testing.T, s *omahatest.Server, method, path, contentType, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := s.HTTP.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb admin.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb.Error
}

func basic(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+token))
}

// TestCrossSiteChangesRefused posts, as a page an operator visits could, a text/plain form
// that would promote a build, with the Basic credentials the operator's browser remembers for
// the dashboard, and every other combination a change must not be accepted with: each is
// refused and changes nothing; the audit log stays empty. Then the same promotion made the
// right way (bearer token, JSON) succeeds and is recorded.
func TestCrossSiteChangesRefused(t *testing.T) {
	s, key := setup(t)
	file := s.BuildPayload(t, "1.1.0", key)
	s.Publish(t, "beta", file)
	promote := "/api/v1/apps/" + s.App + "/promote"
	upload := "/api/v1/apps/" + s.App + "/files"
	formBody := `{"version":"1.1.0","from":"beta","to":"stable","pad":"=x"}` // what <form enctype=text/plain> sends
	jsonBody := `{"version":"1.1.0","from":"beta","to":"stable"}`
	bearer := "Bearer " + s.AdminToken
	payloadBytes, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	before := snap(t, s)
	beforeAudit, err := s.DB.Audit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                     string
		method, path, ctype, aut string
		body                     string
		want                     int
	}{
		{"cross-site text/plain form with Basic", "POST", promote, "text/plain", basic(s.AdminToken), formBody, http.StatusUnauthorized},
		{"cross-site urlencoded form with Basic", "POST", promote, "application/x-www-form-urlencoded", basic(s.AdminToken), "version=1.1.0&from=beta&to=stable", http.StatusUnauthorized},
		{"cross-site form without credentials", "POST", promote, "text/plain", "", formBody, http.StatusUnauthorized},
		{"Basic with JSON", "POST", promote, "application/json", basic(s.AdminToken), jsonBody, http.StatusUnauthorized},
		{"bearer with text/plain", "POST", promote, "text/plain", bearer, jsonBody, http.StatusUnsupportedMediaType},
		{"bearer without content type", "POST", promote, "", bearer, jsonBody, http.StatusUnsupportedMediaType},
		{"bearer with multipart", "POST", promote, "multipart/form-data; boundary=x", bearer, jsonBody, http.StatusUnsupportedMediaType},
		{"upload with Basic", "POST", upload, "application/octet-stream", basic(s.AdminToken), string(payloadBytes), http.StatusUnauthorized},
		{"upload as a text/plain form", "POST", upload, "text/plain", bearer, string(payloadBytes), http.StatusUnsupportedMediaType},
		{"group change with Basic", "PATCH", "/api/v1/apps/" + s.App + "/groups/stable", "application/json", basic(s.AdminToken), `{"enabled":false}`, http.StatusUnauthorized},
		{"read-only bearer with JSON", "POST", promote, "application/json", "Bearer " + s.ReadOnlyToken, jsonBody, http.StatusForbidden},
	} {
		code, msg := send(t, s, tc.method, tc.path, tc.ctype, tc.aut, tc.body)
		if code != tc.want || msg == "" {
			t.Errorf("%s: %d %q, want %d with a message", tc.name, code, msg, tc.want)
		}
	}
	if after := snap(t, s); after.String() != before.String() {
		t.Fatalf("a refused change changed the store:\nbefore %v\nafter  %v", before, after)
	}
	st := s.Status(t)
	for _, c := range st.Channels {
		if c.Name == "stable" && len(c.Packages) != 0 {
			t.Fatalf("stable carries %+v after refused promotions", c.Packages)
		}
	}
	if got, _ := s.DB.Audit(t.Context(), store.AuditFilter{}); len(got) != len(beforeAudit) {
		t.Fatalf("refused changes were audited: %+v", got)
	}
	// Reads still take Basic credentials (the dashboard's browser fetches).
	if code, msg := send(t, s, "GET", "/api/v1/apps/"+s.App+"/status", "", basic(s.ReadOnlyToken), ""); code != http.StatusOK {
		t.Fatalf("read with Basic: %d %s", code, msg)
	}
	// The right way works and is recorded: who, what, where, from where.
	if code, msg := send(t, s, "POST", promote, "application/json; charset=utf-8", bearer, jsonBody); code != http.StatusOK {
		t.Fatalf("bearer JSON promote: %d %s", code, msg)
	}
	page, err := s.Admin.Audit(t.Context(), admin.AuditQuery{Target: "apps/" + s.App + "/channels/stable"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 {
		t.Fatalf("audit of stable: %+v", page.Entries)
	}
	e := page.Entries[0]
	var detail bytes.Buffer
	json.Compact(&detail, e.Detail)
	if e.Who != "omahatest admin" || e.Action != "promote" || e.Remote != "127.0.0.1" || e.At.IsZero() ||
		!strings.Contains(detail.String(), `"request":{"version":"1.1.0","from":"beta","to":"stable"}`) {
		t.Fatalf("audit entry %+v detail %s", e, e.Detail)
	}
}

// TestAuditAPI checks that every kind of change lands in the audit log with its target, and
// the filters and pages of GET /api/v1/audit.
func TestAuditAPI(t *testing.T) {
	s, key := setup(t)
	ctx := t.Context()
	s.Publish(t, "alpha", s.BuildPayload(t, "1.1.0", key))
	s.Promote(t, "1.1.0", "alpha", "beta")
	s.CreateGroup(t, "canary", "beta", admin.Policy{Enabled: true})
	s.UpdateGroup(t, "canary", admin.GroupChange{Enabled: new(false)})
	if _, err := s.Admin.Withdraw(ctx, s.App, "1.1.0"); err != nil {
		t.Fatal(err)
	}
	var all []admin.AuditEntry
	for q := (admin.AuditQuery{Limit: 2}); ; {
		page, err := s.Admin.Audit(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Entries...)
		if page.Next == 0 {
			break
		}
		q.Before = page.Next
	}
	var got []string
	for _, e := range slices.Backward(all) {
		got = append(got, e.Action+" "+strings.TrimPrefix(e.Target, "apps/"+s.App))
	}
	want := []string{"app.create ", "package.publish /channels/alpha", "promote /channels/beta", "group.create /groups/canary",
		"group.update /groups/canary", "withdraw /versions/1.1.0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("audit log:\n got %q\nwant %q", got, want)
	}
	var pub map[string]any
	json.Unmarshal(all[len(all)-2].Detail, &pub)
	if pkg, _ := pub["package"].(map[string]any); pkg["version"] != "1.1.0" || pub["sha256"] == nil {
		t.Fatalf("publish detail %s", all[len(all)-2].Detail)
	}
	groups, err := s.Admin.Audit(ctx, admin.AuditQuery{Target: "apps/" + s.App + "/groups"})
	if err != nil || len(groups.Entries) != 2 {
		t.Fatalf("group entries: %+v %v", groups.Entries, err)
	}
	late, err := s.Admin.Audit(ctx, admin.AuditQuery{Since: all[0].At.Add(time.Millisecond)})
	if err != nil || len(late.Entries) != 0 {
		t.Fatalf("entries after the last: %+v %v", late.Entries, err)
	}
	for _, q := range []string{"since=yesterday", "until=1", "before=-3", "before=x", "limit=-1"} {
		u := "/api/v1/audit?" + q
		if code, msg := send(t, s, "GET", u, "", "Bearer "+s.ReadOnlyToken, ""); code != http.StatusBadRequest || msg == "" {
			t.Errorf("GET %s: %d %q, want 400", u, code, msg)
		}
	}
	// The dashboard lists the recent changes.
	body, resp := get(t, s, s.URL+"/", http.Header{"Authorization": {basic(s.ReadOnlyToken)}})
	for _, want := range []string{`<table id="audit">`, "<td>withdraw</td>", "<td>omahatest admin</td>", "/groups/canary</code>"} {
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
			t.Errorf("dashboard (%d) lacks %q", resp.StatusCode, want)
		}
	}
	var ae *admin.Error
	_, err = (func() (admin.AuditPage, error) {
		c, _ := admin.NewClient(s.URL, "", s.HTTP.Client())
		return c.Audit(ctx, admin.AuditQuery{Target: "x"})
	})()
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized {
		t.Fatalf("audit without a token: %v", err)
	}
}
