package updated_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/enroll"
)

// enrolledServer is a real omahad offering 2.0.0 (signed with rel's key) to its stable group,
// which requires enrollment.
func enrolledServer(t *testing.T, rel *release) *omahatest.Server {
	s := omahatest.New(t)
	s.CreateApp(t, payload.DefaultAppID, rel.trust)
	s.Publish(t, "stable", rel.build(t, t.TempDir(), "2.0.0", 1, false))
	s.UpdateGroup(t, "stable", admin.GroupChange{RequireEnrollment: ptr(true)})
	return s
}

func ptr[T any](v T) *T { return &v }

// TestEnrollment: an agent with ENROLLMENT_TOKEN in update.conf enrolls at its first check,
// keeps the credential in its state directory (0600) and sends it, so the group that requires
// enrollment offers it the update; the token is spent once.
func TestEnrollment(t *testing.T) {
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	s := enrolledServer(t, rel)
	tok, err := s.Admin.CreateEnrollToken(t.Context(), s.App, admin.EnrollTokenCreate{Name: "test", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.writeConf(s.UpdateURL, updated.ConfEnrollmentToken+"="+tok.Secret)

	r := h.start(s.UpdateURL, fast, 0)
	waitState(t, r, "UPDATED_NEED_REBOOT", inState(updated.UpdatedNeedReboot))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	dir := h.dir + "/state"
	c, err := enroll.Load(dir, payload.DefaultAppID, h.machineID)
	if err != nil || !strings.HasPrefix(c.Credential, "ts-host-") {
		t.Fatalf("credential on disk: %+v, %v", c, err)
	}
	if fi, err := os.Stat(enroll.Path(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file mode: %v, %v", fi, err)
	}
	if in := s.Instance(t, h.machineID); in.GrantedVersion != "2.0.0" || in.State != "installed" {
		t.Fatalf("server's record of the host: %+v", in)
	}
	ts, err := s.Admin.EnrollTokens(t.Context(), s.App)
	if err != nil || len(ts) != 1 || ts[0].Uses != 1 {
		t.Fatalf("tokens after the enrollment: %+v, %v", ts, err)
	}
}

// TestEnrollmentRefused: with a token the server refuses, the agent logs a clear error, keeps
// no credential and still checks in, anonymously (and is offered nothing).
func TestEnrollmentRefused(t *testing.T) {
	h := newHost(t, "1.0.0")
	rel := newRelease(t, 0)
	rel.install(t, h)
	s := enrolledServer(t, rel)
	h.writeConf(s.UpdateURL, updated.ConfEnrollmentToken+"=ts-enroll-madeup")
	var logs omahatest.SyncBuffer
	cfg := fast
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r := h.start(s.UpdateURL, cfg, 0)
	waitState(t, r, "a check answered", func(rec updated.Record) bool { return rec.State == updated.Idle && !rec.LastChecked.IsZero() })
	r.stop(t)
	if !strings.Contains(logs.String(), "enrollment failed") || !strings.Contains(logs.String(), "unknown enrollment token") {
		t.Fatalf("log lacks the enrollment error:\n%s", logs.String())
	}
	if _, err := os.Stat(enroll.Path(h.dir + "/state")); !os.IsNotExist(err) {
		t.Fatalf("a refused enrollment left a credential file: %v", err)
	}
	if in := s.Instance(t, h.machineID); in.State != "onhold" || in.GrantedVersion != "" {
		t.Fatalf("the anonymous check-in as recorded: %+v", in)
	}
}
