package updatectl_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/updated/enroll"
	"github.com/twinslot/twinslot/updated/updatectl"
)

// TestEnroll: updatectl enroll saves the credential, and updatectl download then gets the offer
// of a group that requires enrollment; a refused token is a clear error that writes nothing.
func TestEnroll(t *testing.T) {
	srv := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	srv.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
	dir := t.TempDir()
	p := filepath.Join(dir, "p.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(1<<20, 3), p, payloadtest.Options("2.0.0"), key)
	srv.Publish(t, "stable", p)
	srv.UpdateGroup(t, "stable", admin.GroupChange{RequireEnrollment: new(true)})
	tok, err := srv.Admin.CreateEnrollToken(t.Context(), srv.App, admin.EnrollTokenCreate{MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	machine := omahatest.NewMachineID()
	env := updatectl.Env{Host: fstest.MapFS{
		"etc/machine-id":     {Data: []byte(machine + "\n")},
		"usr/lib/os-release": {Data: []byte("ID=twinslot\nVERSION=1.0.0\nBOARD=amd64-usr\n")},
	}}
	conf := filepath.Join(dir, "update.conf")
	os.WriteFile(conf, []byte("SERVER="+srv.UpdateURL+"\nGROUP=stable\n"), 0o644)
	state := filepath.Join(dir, "state")
	to := filepath.Join(dir, "update.tsp")

	if code, out, _ := ctl(t, env, "download", "--to", to, "--config", conf, "--state-dir", state); code != 0 || !strings.Contains(out, "no update") {
		t.Fatalf("download before enrolling: %d %s", code, out)
	}
	if code, _, errs := ctl(t, env, "enroll", "--config", conf, "--state-dir", state, "--token", "ts-enroll-madeup"); code != 1 || !strings.Contains(errs, "unknown enrollment token") {
		t.Fatalf("enroll with a made-up token: %d %s", code, errs)
	}
	if _, err := os.Stat(enroll.Path(state)); !os.IsNotExist(err) {
		t.Fatalf("a refused enrollment wrote %s: %v", enroll.Path(state), err)
	}
	if code, _, _ := ctl(t, env, "enroll", "--config", conf); code != 2 {
		t.Fatalf("enroll without --token: exit %d", code)
	}
	code, out, errs := ctl(t, env, "enroll", "--config", conf, "--state-dir", state, "--token", tok.Secret, "--json")
	if code != 0 {
		t.Fatalf("enroll: %d %s %s", code, out, errs)
	}
	var rep updatectl.EnrollReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.MachineID != machine || rep.File != enroll.Path(state) || strings.Contains(out, "ts-host-") {
		t.Fatalf("enroll report %q: %v", out, err)
	}
	if fi, err := os.Stat(rep.File); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credential file: %v %v", fi, err)
	}
	if code, out, errs := ctl(t, env, "download", "--to", to, "--config", conf, "--state-dir", state); code != 0 || !strings.Contains(out, "downloaded 2.0.0") {
		t.Fatalf("download once enrolled: %d %s %s", code, out, errs)
	}
}
