package enroll_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/updated/enroll"
)

const (
	app     = payload.DefaultAppID
	machine = "0123456789abcdef0123456789abcdef"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := enroll.Load(dir, app, machine); !errors.Is(err, enroll.ErrNotEnrolled) {
		t.Fatalf("Load of nothing = %v", err)
	}
	c := enroll.Credential{AppID: app, MachineID: machine, Credential: "ts-host-x", Enrolled: time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)}
	if err := enroll.Save(dir, c); err != nil {
		t.Fatal(err)
	}
	got, err := enroll.Load(dir, app, machine)
	if err != nil || got.Credential != "ts-host-x" || got.Version != 1 || !got.Enrolled.Equal(c.Enrolled) {
		t.Fatalf("Load = %+v, %v", got, err)
	}
	// A file of another machine (a cloned disk) or app is no credential of this one.
	for _, who := range [][2]string{{app, strings.Repeat("f", 32)}, {"e96281a6-d1af-4bde-9a0a-97b76e56dc57", machine}} {
		if _, err := enroll.Load(dir, who[0], who[1]); !errors.Is(err, enroll.ErrNotEnrolled) {
			t.Fatalf("Load for %v = %v", who, err)
		}
	}
	bad := []struct{ name, data, want string }{
		{"garbage", "nope", "not a credential file"},
		{"future version", `{"version":2,"app_id":"` + app + `","machine_id":"` + machine + `","credential":"x"}`, "version 2"},
		{"huge", `{"credential":"` + strings.Repeat("x", 20<<10) + `"}`, "larger than"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(enroll.Path(dir), []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := enroll.Load(dir, app, machine); err == nil || errors.Is(err, enroll.ErrNotEnrolled) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestEnroll exchanges a token at a real omahad: the credential is saved 0600 and works once;
// a refused token writes nothing.
func TestEnroll(t *testing.T) {
	s := omahatest.New(t)
	s.CreateApp(t, app, payloadtest.TrustRoot(t, 1, 0, payloadtest.NewKey(t, "")))
	tok, err := s.Admin.CreateEnrollToken(t.Context(), s.App, admin.EnrollTokenCreate{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := omaha.NewClient([]string{s.UpdateURL}, omaha.ClientOptions{HTTPClient: s.HTTP.Client()})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() + "/state"
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	c, err := enroll.Enroll(t.Context(), cl, dir, app, machine, tok.Secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(enroll.Path(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v, %v", fi, err)
	}
	if got, err := enroll.Load(dir, app, machine); err != nil || got != c {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, c)
	}
	other := t.TempDir()
	_, err = enroll.Enroll(t.Context(), cl, other, app, strings.Repeat("a", 32), tok.Secret, now)
	var ee *omaha.EnrollError
	if !errors.As(err, &ee) || ee.HTTPStatus != 403 || ee.Transient || !strings.Contains(err.Error(), "used up") {
		t.Fatalf("second enrollment with a one-use token: %v", err)
	}
	if _, err := os.Stat(enroll.Path(other)); !os.IsNotExist(err) {
		t.Fatalf("a refused enrollment wrote a file: %v", err)
	}
}
