package server_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// enrolledHost returns a twinslot agent host of group that enrolled with token.
func enrolledHost(t *testing.T, s *omahatest.Server, group, token string) *omahatest.Host {
	t.Helper()
	h := s.Host(t, group, "1.0.0")
	h.Updater = omaha.DefaultUpdaterVersion
	h.Credential = enroll(t, s, token, h.MachineID)
	return h
}

func enroll(t *testing.T, s *omahatest.Server, token, machineID string) string {
	t.Helper()
	c, err := omaha.NewClient([]string{s.UpdateURL}, omaha.ClientOptions{HTTPClient: s.HTTP.Client()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Enroll(t.Context(), omaha.EnrollRequest{AppID: omaha.FormatAppID(s.App), MachineID: machineID, Token: token})
	if err != nil {
		t.Fatalf("enroll %s: %v", machineID, err)
	}
	if res.MachineID != machineID || res.AppID != s.App || !strings.HasPrefix(res.Credential, "ts-host-") {
		t.Fatalf("enroll answer %+v", res)
	}
	return res.Credential
}

func enrollToken(t *testing.T, s *omahatest.Server, c admin.EnrollTokenCreate) admin.EnrollTokenCreated {
	t.Helper()
	tok, err := s.Admin.CreateEnrollToken(t.Context(), s.App, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestEnrollmentRequired: in a group that requires enrollment only a host presenting the
// credential of its own machine id is offered the update; a credential used with another
// machine id, a missing one, one of another group, and update_engine (unless the group serves
// Flatcar anonymously) get noupdate; a forged failure report with an enrolled host's machine id
// neither halts the group nor changes that host's record.
func TestEnrollmentRequired(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, HaltOnFailures: 1, RequireEnrollment: true})
	s.CreateGroup(t, "lab", "stable", admin.Policy{Enabled: true, RequireEnrollment: true})
	tok := enrollToken(t, s, admin.EnrollTokenCreate{Name: "fleet", Group: "fleet", MaxUses: 10, ExpiresIn: admin.Duration(time.Hour)})

	a := enrolledHost(t, s, "fleet", tok.Secret)
	if a.Check(t) == nil {
		t.Fatal("an enrolled host got no offer")
	}
	cases := []struct {
		name string
		host func() *omahatest.Host
	}{
		{"no credential", func() *omahatest.Host {
			h := s.Host(t, "fleet", "1.0.0")
			h.Updater = omaha.DefaultUpdaterVersion
			return h
		}},
		{"credential of another machine", func() *omahatest.Host {
			h := s.Host(t, "fleet", "1.0.0")
			h.Updater, h.Credential = omaha.DefaultUpdaterVersion, a.Credential
			return h
		}},
		{"made-up credential", func() *omahatest.Host {
			h := s.Host(t, "fleet", "1.0.0")
			h.Updater, h.Credential = omaha.DefaultUpdaterVersion, "ts-host-"+strings.Repeat("A", 43)
			return h
		}},
		{"credential of another group", func() *omahatest.Host {
			h := *a
			h.Track = "lab"
			return &h
		}},
		{"update_engine", func() *omahatest.Host { return s.Host(t, "fleet", "1.0.0") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.host()
			if u := h.Check(t); u != nil {
				t.Fatalf("offered %s", u.Version)
			}
		})
	}
	s.Flush(t)

	// A forged 3/0 with a's machine id and no credential: recorded, not counted, a unchanged.
	before := s.Instance(t, a.MachineID)
	forger := *a
	forger.Credential, forger.Version = "", "0.0.1"
	forger.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeRollback)
	s.Flush(t)
	if g, err := s.Admin.Group(t.Context(), s.App, "fleet"); err != nil || !g.Policy.Enabled {
		t.Fatalf("a forged failure halted the group: %+v %v", g.Policy, err)
	}
	after := s.Instance(t, a.MachineID)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("a forged request changed the enrolled host's record:\n%+v\n%+v", before, after)
	}
	evs := s.Events(t, a.MachineID)
	if last := len(evs) - 1; last < 0 || evs[last].Result != int(omaha.EventResultError) || evs[last].TargetVersion != "" || evs[last].Version != "0.0.1" {
		t.Fatalf("forged event as recorded: %+v", evs)
	}
	// The real host's failure counts.
	a.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	s.Flush(t)
	if g, _ := s.Admin.Group(t.Context(), s.App, "fleet"); g.Policy.Enabled {
		t.Fatal("the enrolled host's failure did not halt the group")
	}

	// Flatcar clients served anonymously where the group allows.
	s.UpdateGroup(t, "lab", admin.GroupChange{Anonymous: ptr("flatcar")})
	if s.Host(t, "lab", "1.0.0").Check(t) == nil {
		t.Fatal("update_engine got no offer in a group serving Flatcar anonymously")
	}
	tw := s.Host(t, "lab", "1.0.0")
	tw.Updater = omaha.DefaultUpdaterVersion
	if tw.Check(t) != nil {
		t.Fatal("an unenrolled twinslot agent was served anonymously")
	}
	if _, err := s.Admin.UpdateGroup(t.Context(), s.App, "lab", admin.GroupChange{Anonymous: ptr("everyone")}); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("anonymous everyone: %v", err)
	}

	// Six checks answered not-enrolled; their routine 3/2 events and the forged 3/0 are events.
	body, _ := get(t, s, s.URL+"/metrics", nil)
	for _, want := range []string{`omahad_enrollments_total{result="enrolled"} 1`, `omahad_not_enrolled_total{kind="check"} 6`,
		`omahad_not_enrolled_total{kind="event"} 7`, `omahad_update_checks_total{reason="not-enrolled",status="noupdate"} 6`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestInventedHosts is issue 16's proof: 1,000 made-up machine ids check in to a group that
// requires enrollment, some with made-up credentials, and a tenth of them report failures
// (3/0); the group's budget stays whole for the enrolled hosts and it does not halt.
func TestInventedHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping 1,000 invented hosts")
	}
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, MaxUpdates: 3, Period: admin.Duration(time.Hour),
		UpdateTimeout: admin.Duration(time.Hour), HaltOnFailures: 1, RequireEnrollment: true})
	tok := enrollToken(t, s, admin.EnrollTokenCreate{Name: "fleet", MaxUses: 4})
	for i := range 1000 {
		h := s.Host(t, "fleet", "1.0.0")
		switch i % 3 {
		case 1:
			h.Updater = omaha.DefaultUpdaterVersion
		case 2:
			h.Updater, h.Credential = omaha.DefaultUpdaterVersion, fmt.Sprintf("ts-host-invented%035d", i)
		}
		if u := h.Check(t); u != nil {
			t.Fatalf("invented host %d was offered %s", i, u.Version)
		}
		if i%10 == 0 {
			h.Event(t, omaha.EventTypeUpdateDownloadStarted, omaha.EventResultSuccess, 0)
			h.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, omaha.ErrorCodeRollback)
		}
	}
	s.Flush(t)
	g, err := s.Admin.Group(t.Context(), s.App, "fleet")
	if err != nil || !g.Policy.Enabled || g.Policy.HaltedReason != "" {
		t.Fatalf("the invented hosts halted the group: %+v, %v", g.Policy, err)
	}
	enrolled := make([]*omahatest.Host, 4)
	for i := range enrolled {
		enrolled[i] = enrolledHost(t, s, "fleet", tok.Secret)
	}
	for i, h := range enrolled[:3] {
		if h.Check(t) == nil {
			t.Fatalf("enrolled host %d got no offer: the invented hosts took the budget", i)
		}
	}
	if enrolled[3].Check(t) != nil {
		t.Fatal("a fourth enrolled host was offered beyond max-updates 3: the budget is not enforced")
	}
	st := s.Status(t)
	for _, gs := range st.Groups {
		if gs.Group.Name == "fleet" && (gs.Group.Policy.HaltedReason != "" || len(gs.Failures) != 0) {
			t.Fatalf("status counts the invented hosts' failures: %+v", gs)
		}
	}
}

// TestUnenrolledCommitsDoNotCount: in a group that requires enrollment, hosts without a
// credential that report having committed a version (3/2 naming the version they came from)
// are not counted by the promotion gate's min_committed, so made-up machine ids cannot promote
// it; an enrolled host that was granted it and committed it is.
func TestUnenrolledCommitsDoNotCount(t *testing.T) {
	s, key := setup(t)
	ctx, a := t.Context(), s.Admin
	s.Publish(t, "stable", s.BuildPayload(t, "1.0.0", key))
	s.Publish(t, "beta", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "beta", admin.Policy{Enabled: true, RequireEnrollment: true})
	if _, err := a.SetGate(ctx, s.App, admin.Gate{Channel: "stable", MinCommitted: 2, MaxFailures: -1, MaxRollbacks: -1}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h := s.Host(t, "fleet", "1.1.0")
		h.Updater = omaha.DefaultUpdaterVersion // a twinslot agent without a credential
		h.PreviousVersion = "1.0.0"
		if h.Check(t) != nil {
			t.Fatal("an unenrolled host was offered an update")
		}
	}
	tok := enrollToken(t, s, admin.EnrollTokenCreate{})
	h := enrolledHost(t, s, "fleet", tok.Secret)
	if h.Check(t) == nil {
		t.Fatal("no offer to an enrolled host")
	}
	h.Install(t)
	h.Reboot("1.1.0")
	h.Check(t)
	s.Flush(t)
	promote := admin.Promote{Version: "1.1.0", From: "beta", To: "stable"}
	cs, err := a.CheckGate(ctx, s.App, promote)
	if err != nil {
		t.Fatal(err)
	}
	if c := gateByName(t, cs, "min_committed"); c.Has != 1 {
		t.Errorf("min_committed counts %d hosts, want 1 (the enrolled one): %s", c.Has, c.Text)
	}
	if _, err := a.Promote(ctx, s.App, promote); err == nil {
		t.Error("1.1.0 was promoted to stable on the word of unenrolled hosts")
	}
}

// TestGrantStartTimeout: a grant whose host does not report 13/1 within the group's grant
// start timeout returns its slot; the host can be granted again later; a host that started
// keeps its slot.
func TestGrantStartTimeout(t *testing.T) {
	c := newClock()
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	g := s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, MaxUpdates: 1, Period: admin.Duration(24 * time.Hour),
		UpdateTimeout: admin.Duration(time.Hour), GrantStartTimeout: admin.Duration(10 * time.Minute)})
	if time.Duration(g.Policy.GrantStartTimeout) != 10*time.Minute {
		t.Fatalf("policy as created: %+v", g.Policy)
	}
	idle, starter, late := s.Host(t, "fleet", "1.0.0"), s.Host(t, "fleet", "1.0.0"), s.Host(t, "fleet", "1.0.0")
	if idle.Check(t) == nil {
		t.Fatal("no first offer")
	}
	c.Add(9 * time.Minute)
	if starter.Check(t) != nil {
		t.Fatal("offered beyond max-updates 1 before the grant start timeout")
	}
	c.Add(time.Minute + time.Second)
	if starter.Check(t) == nil {
		t.Fatal("the grant that was never started did not return its slot")
	}
	starter.Event(t, omaha.EventTypeUpdateDownloadStarted, omaha.EventResultSuccess, 0)
	if idle.Check(t) != nil {
		t.Fatal("the expired grant was honoured without a slot")
	}
	c.Add(11 * time.Minute)
	if late.Check(t) != nil {
		t.Fatal("a started grant lost its slot to the grant start timeout")
	}
	if in := s.Instance(t, starter.MachineID); in.State != "downloading" {
		t.Fatalf("starter state %q", in.State)
	}
	// Without the timeout, the silent grant keeps its slot for the update timeout.
	s.UpdateGroup(t, "fleet", admin.GroupChange{GrantStartTimeout: ptr(admin.Duration(0))})
	starter.Install(t)
	c.Add(25 * time.Hour)
	if idle.Check(t) == nil {
		t.Fatal("no offer in the next period")
	}
	c.Add(30 * time.Minute)
	if late.Check(t) != nil {
		t.Fatal("without a grant start timeout a silent grant lost its slot early")
	}
}

// TestGrantStartTimeoutKeepsFinishedSlot: a host that installed and committed its update within
// the period keeps the slot it used when it is later answered onhold (here for a next version
// outside the group's office hours): its grant started, though its state no longer shows it,
// so a max-1 group grants nobody else in that period.
func TestGrantStartTimeoutKeepsFinishedSlot(t *testing.T) {
	c := newClock() // Monday 10:00 UTC
	s, key := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, MaxUpdates: 1, Period: admin.Duration(24 * time.Hour),
		GrantStartTimeout: admin.Duration(10 * time.Minute)})
	done, other := s.Host(t, "fleet", "1.0.0"), s.Host(t, "fleet", "1.0.0")
	if done.Check(t) == nil {
		t.Fatal("no first offer")
	}
	done.Install(t)
	done.Reboot("1.1.0")
	done.Check(t)
	c.Add(time.Minute)
	if other.Check(t) != nil {
		t.Fatal("offered beyond max-updates 1")
	}
	s.UpdateGroup(t, "fleet", admin.GroupChange{OfficeHours: ptr("Sat 00:00-01:00")})
	s.Publish(t, "stable", s.BuildPayload(t, "1.2.0", key))
	c.Add(20 * time.Minute)
	if done.Check(t) != nil {
		t.Fatal("offered outside office hours")
	}
	if in := s.Instance(t, done.MachineID); in.State != "onhold" {
		t.Fatalf("state outside office hours: %q, want onhold", in.State)
	}
	s.UpdateGroup(t, "fleet", admin.GroupChange{OfficeHours: ptr("")})
	c.Add(time.Minute)
	if u := other.Check(t); u != nil {
		t.Errorf("granted %s 22 minutes after the period's only grant, which its host finished", u.Version)
	}
}

// TestHaltCountsOnlyOfferedHosts keeps today's rule: a failure report from a host that was not
// offered the version (held back by the budget) does not count toward halt_on_failures.
func TestHaltCountsOnlyOfferedHosts(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, MaxUpdates: 1, Period: admin.Duration(time.Hour), HaltOnFailures: 1})
	offered, held := s.Host(t, "fleet", "1.0.0"), s.Host(t, "fleet", "1.0.0")
	if offered.Check(t) == nil || held.Check(t) != nil {
		t.Fatal("want one offer and one host held back")
	}
	held.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	s.Flush(t)
	if g, _ := s.Admin.Group(t.Context(), s.App, "fleet"); !g.Policy.Enabled {
		t.Fatalf("a host never offered the version halted the group: %s", g.Policy.HaltedReason)
	}
	offered.Event(t, omaha.EventTypeUpdateComplete, omaha.EventResultError, 1001)
	s.Flush(t)
	if g, _ := s.Admin.Group(t.Context(), s.App, "fleet"); g.Policy.Enabled {
		t.Fatal("the offered host's failure did not halt the group")
	}
}

// TestEnrollEndpoint: bad enrollments are refused with a message that says what to do and
// store nothing; tokens expire, run out and are revoked; the audit log records token changes
// and enrollments, never a secret.
func TestEnrollEndpoint(t *testing.T) {
	c := newClock()
	s, _ := setup(t, omahatest.WithConfig(func(cfg *server.Config) { cfg.Now = c.Now }))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, RequireEnrollment: true})
	ctx := t.Context()
	tok := enrollToken(t, s, admin.EnrollTokenCreate{Name: "rack", Group: "fleet", MaxUses: 1, ExpiresIn: admin.Duration(time.Hour)})
	post := func(contentType, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/v1/enroll", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		resp, err := s.HTTP.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	m := omahatest.NewMachineID()
	bad := []struct {
		name, ctype, body string
		code              int
		want              string
	}{
		{"form", "application/x-www-form-urlencoded", "token=" + tok.Secret, 415, "Content-Type: application/json"},
		{"bad machine id", "application/json", `{"machine_id":"x","token":"` + tok.Secret + `"}`, 400, "32 lowercase hex"},
		{"unknown field", "application/json", `{"machine_id":"` + m + `","token":"` + tok.Secret + `","admin":true}`, 400, "unknown field"},
		{"bad app", "application/json", `{"app_id":"nope","machine_id":"` + m + `","token":"` + tok.Secret + `"}`, 400, "appid"},
		{"admin token", "application/json", `{"machine_id":"` + m + `","token":"` + s.AdminToken + `"}`, 403, "not an enrollment token"},
		{"unknown token", "application/json", `{"machine_id":"` + m + `","token":"ts-enroll-nope"}`, 403, "unknown enrollment token"},
		{"huge", "application/json", `{"machine_id":"` + m + `","token":"` + strings.Repeat("x", 8000) + `"}`, 413, "larger than"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(tc.ctype, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%d %s, want %d with %q", code, body, tc.code, tc.want)
			}
		})
	}
	if _, err := s.DB.HostCredential(ctx, s.App, m); err == nil {
		t.Fatal("a refused enrollment stored a credential")
	}
	c.Add(time.Hour)
	if code, body := post("application/json", `{"machine_id":"`+m+`","token":"`+tok.Secret+`"}`); code != 403 || !strings.Contains(body, "expired") {
		t.Fatalf("expired token: %d %s", code, body)
	}
	tok2 := enrollToken(t, s, admin.EnrollTokenCreate{MaxUses: 1})
	enroll(t, s, tok2.Secret, m)
	if code, body := post("application/json", `{"machine_id":"`+omahatest.NewMachineID()+`","token":"`+tok2.Secret+`"}`); code != 403 || !strings.Contains(body, "used up") {
		t.Fatalf("used-up token: %d %s", code, body)
	}
	tok3 := enrollToken(t, s, admin.EnrollTokenCreate{})
	if rv, err := s.Admin.RevokeEnrollToken(ctx, s.App, tok3.ID); err != nil || rv.Revoked.IsZero() {
		t.Fatalf("revoke: %+v %v", rv, err)
	}
	if code, body := post("application/json", `{"machine_id":"`+omahatest.NewMachineID()+`","token":"`+tok3.Secret+`"}`); code != 403 || !strings.Contains(body, "revoked") {
		t.Fatalf("revoked token: %d %s", code, body)
	}
	if _, err := s.Admin.RevokeEnrollToken(ctx, s.App, "nope"); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if _, err := s.Admin.CreateEnrollToken(ctx, s.App, admin.EnrollTokenCreate{Group: "nope"}); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("token for an unknown group: %v", err)
	}
	ts, err := s.Admin.EnrollTokens(ctx, s.App)
	if err != nil || len(ts) != 3 || ts[0].Name != "rack" {
		t.Fatalf("tokens: %+v %v", ts, err)
	}
	for _, lt := range ts {
		if (lt.ID == tok2.ID) != (lt.Uses == 1) || (lt.ID == tok3.ID) != !lt.Revoked.IsZero() {
			t.Fatalf("tokens: %+v", ts)
		}
	}

	page, err := s.Admin.Audit(ctx, admin.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range page.Entries {
		actions = append(actions, e.Action)
		for _, secret := range []string{tok.Secret, tok2.Secret, tok3.Secret, "ts-host-"} {
			if strings.Contains(string(e.Detail), secret) {
				t.Fatalf("audit entry %s holds a secret: %s", e.Action, e.Detail)
			}
		}
	}
	got := strings.Join(actions, " ")
	if want := "enroll-token.revoke enroll-token.create host.enroll enroll-token.create enroll-token.create"; !strings.HasPrefix(got, want) {
		t.Fatalf("audit actions %q, want prefix %q", got, want)
	}
	if e := page.Entries[2]; e.Target != "apps/"+s.App+"/hosts/"+m || !strings.Contains(e.Who, tok2.ID) {
		t.Fatalf("enrollment audit entry %+v", e)
	}
}

// TestUnenroll: deleting a host's credential makes a group that requires enrollment stop
// trusting it at once; enrolling again restores it; the audit log records it.
func TestUnenroll(t *testing.T) {
	s, key := setup(t)
	s.Publish(t, "stable", s.BuildPayload(t, "1.1.0", key))
	s.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, RequireEnrollment: true})
	tok := enrollToken(t, s, admin.EnrollTokenCreate{})
	h := enrolledHost(t, s, "fleet", tok.Secret)
	if h.Check(t) == nil {
		t.Fatal("no offer to an enrolled host")
	}
	ctx := t.Context()
	hc, err := s.Admin.UnenrollHost(ctx, s.App, h.MachineID)
	if err != nil || hc.MachineID != h.MachineID || hc.TokenID != tok.ID {
		t.Fatalf("unenroll: %+v, %v", hc, err)
	}
	if h.Check(t) != nil {
		t.Fatal("an unenrolled host was offered the update")
	}
	if _, err := s.Admin.UnenrollHost(ctx, s.App, h.MachineID); !errors.Is(err, admin.ErrNotFound) {
		t.Fatalf("unenroll twice: %v", err)
	}
	if _, err := s.Admin.UnenrollHost(ctx, s.App, "nope"); !errors.Is(err, admin.ErrBadRequest) {
		t.Fatalf("unenroll a bad machine id: %v", err)
	}
	h.Credential = enroll(t, s, tok.Secret, h.MachineID)
	if h.Check(t) == nil {
		t.Fatal("no offer after enrolling again")
	}
	page, err := s.Admin.Audit(ctx, admin.AuditQuery{Target: "apps/" + s.App + "/hosts/" + h.MachineID})
	if err != nil || len(page.Entries) != 3 || page.Entries[1].Action != "host.unenroll" {
		t.Fatalf("audit of the host: %+v, %v", page.Entries, err)
	}
}

// TestEnrollReplicasPostgres: two servers on one database. A host enrolled through A is trusted
// by B (which reads the credential it does not know); enrolled again through A (a reinstalled
// host), B stops trusting the replaced credential and trusts the new one; unenrolled through A,
// B stops trusting it. B learns of both changes when it polls the credentials version.
func TestEnrollReplicasPostgres(t *testing.T) {
	dsn := omahatest.PostgresDSN(t)
	poll := omahatest.WithConfig(func(c *server.Config) { c.CachePoll = 10 * time.Millisecond })
	a := omahatest.New(t, omahatest.WithDSN(dsn), poll)
	key := payloadtest.NewKey(t, "")
	a.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
	a.Publish(t, "stable", a.BuildPayload(t, "1.1.0", key))
	a.CreateGroup(t, "fleet", "stable", admin.Policy{Enabled: true, RequireEnrollment: true})
	b := omahatest.New(t, omahatest.WithDSN(dsn), poll) // started with the app and group in place
	b.App = a.App
	tok := enrollToken(t, a, admin.EnrollTokenCreate{})
	h := enrolledHost(t, a, "fleet", tok.Secret)
	hb := b.Host(t, "fleet", "1.0.0")
	hb.MachineID, hb.Updater, hb.Credential = h.MachineID, h.Updater, h.Credential
	if hb.Check(t) == nil {
		t.Fatal("replica B did not trust a host enrolled through A")
	}
	untrusted := func(why string) {
		t.Helper()
		trusted := true
		for i := 0; i < 500 && trusted; i++ {
			time.Sleep(10 * time.Millisecond)
			trusted = hb.Check(t) != nil
		}
		if trusted {
			t.Fatalf("replica B kept trusting a host %s", why)
		}
	}

	cred2 := enroll(t, a, tok.Secret, h.MachineID)
	if cred2 == h.Credential {
		t.Fatal("enrolling again returned the same credential")
	}
	untrusted("with the credential replaced by enrolling again through A")
	hb.Credential = cred2
	if hb.Check(t) == nil {
		t.Fatal("replica B did not trust the host's new credential")
	}

	if _, err := a.Admin.UnenrollHost(t.Context(), a.App, h.MachineID); err != nil {
		t.Fatal(err)
	}
	untrusted("unenrolled through A")
}
