package updatectl_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/testimages/simhost"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/dbustest"
	"github.com/twinslot/twinslot/updated/updatectl"
)

func ctl(t *testing.T, env updatectl.Env, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := updatectl.Run(t.Context(), env, args, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

// world is an update server offering 2.0.0, a simulated host on 1.0.0 whose agent serves
// D-Bus on a private bus, and the payload.
type world struct {
	srv     *omahatest.Server
	host    *simhost.Host
	bus     *dbustest.Daemon
	payload string
	trust   string
	stop    func()
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	usr1, usr2, disk := filepath.Join(dir, "usr1.img"), filepath.Join(dir, "usr2.img"), filepath.Join(dir, "disk.img")
	size := testimages.SlotSize(testimages.MinDiskSize)
	if err := testimages.BuildUsr(ctx, usr1, testimages.UsrOptions{Version: "1.0.0", Size: size}); err != nil {
		t.Fatal(err)
	}
	if err := testimages.BuildDisk(ctx, disk, testimages.DiskOptions{Usr: usr1, Size: testimages.MinDiskSize}); err != nil {
		t.Fatal(err)
	}
	if err := testimages.BuildUsr(ctx, usr2, testimages.UsrOptions{Version: "2.0.0", Base: usr1, Change: 0.05}); err != nil {
		t.Fatal(err)
	}
	w := &world{srv: omahatest.New(t), bus: dbustest.New(t), payload: filepath.Join(dir, "2.0.0.tsp")}
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, key)
	w.trust = payloadtest.WriteTrustRoot(t, dir, trust)
	w.srv.CreateApp(t, payload.DefaultAppID, trust)
	payloadtest.BuildFile(t, usr2, w.payload, payloadtest.Options("2.0.0"), key)
	w.srv.Publish(t, "stable", w.payload)
	h, err := simhost.New(ctx, t.TempDir(), simhost.Options{Disk: disk, Server: w.srv.UpdateURL, Trust: trust, MachineID: omahatest.NewMachineID()})
	if err != nil {
		t.Fatal(err)
	}
	w.host = h
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(actx, updated.Config{Bus: w.bus.Conn(t)}) }()
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(w.stop)
	// Wait until the agent serves its API.
	for i := 0; ; i++ {
		if code, _, _ := ctl(t, updatectl.Env{}, "status", "--bus", w.bus.Addr); code == 0 {
			break
		}
		if i > 1000 {
			t.Fatal("the agent never answered on D-Bus")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

func TestAgentCommands(t *testing.T) {
	w := newWorld(t)
	env := updatectl.Env{}
	bus := []string{"--bus", w.bus.Addr}

	code, out, errs := ctl(t, env, append([]string{"status"}, bus...)...)
	if code != 0 || !strings.Contains(out, "UPDATE_STATUS_IDLE") || !strings.Contains(out, "steady, running 1.0.0 on USR-A") ||
		!strings.Contains(out, "last checked:  never") {
		t.Fatalf("status: %d\n%s%s", code, out, errs)
	}

	// check --wait follows the whole install, with a progress line.
	code, out, errs = ctl(t, env, append([]string{"check", "--wait"}, bus...)...)
	if code != 0 {
		t.Fatalf("check --wait: %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"CHECKING_FOR_UPDATE", "UPDATE_AVAILABLE 2.0.0", "DOWNLOADING", "installing 2.0.0", "FINALIZING 2.0.0", "UPDATED_NEED_REBOOT 2.0.0"} {
		if !strings.Contains(out, want) {
			t.Fatalf("check --wait output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = ctl(t, env, append([]string{"status", "--json"}, bus...)...)
	var st updatectl.StatusReport
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.CurrentOperation != "UPDATE_STATUS_UPDATED_NEED_REBOOT" ||
		st.NewVersion != "2.0.0" || st.Progress != 1 || st.LastCheckedTime == 0 || st.Boot.State != "steady" {
		t.Fatalf("status --json: %d %s", code, out)
	}

	code, out, _ = ctl(t, env, "history", "--state-dir", w.host.StateDir())
	if code != 0 || !strings.Contains(out, "1.0.0") || !strings.Contains(out, "installed") || !strings.Contains(out, "USR-B") {
		t.Fatalf("history: %d\n%s", code, out)
	}

	// reset cancels the installed update.
	if code, out, errs = ctl(t, env, append([]string{"reset"}, bus...)...); code != 0 {
		t.Fatalf("reset: %d %s %s", code, out, errs)
	}
	var rep updatectl.HistoryReport
	for i := 0; ; i++ {
		_, out, _ = ctl(t, env, "history", "--json", "--state-dir", w.host.StateDir())
		rep = updatectl.HistoryReport{}
		if json.Unmarshal([]byte(out), &rep) != nil {
			t.Fatalf("history --json: %s", out)
		}
		if len(rep.Attempts) == 1 || i > 500 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(rep.Attempts) != 1 || rep.Attempts[0].Outcome != updated.OutcomeCancelled || rep.Current != nil || rep.State != updated.Idle {
		t.Fatalf("history after reset: %+v", rep)
	}
	// A group the server does not know (Nebraska's error-unknownApplicationOrGroup answer) is
	// said as what it is, with the file that set GROUP: in check --wait, status and history,
	// from the agent's state file.
	os.WriteFile(w.host.ConfPath(), []byte("SERVER="+w.srv.UpdateURL+"\nGROUP=nightly\n"), 0o644)
	state := []string{"--state-dir", w.host.StateDir()}
	want := `the server knows no group "nightly"`
	code, _, errs = ctl(t, env, append(append([]string{"check", "--wait"}, bus...), state...)...)
	if code != 1 || !strings.Contains(errs, "the update attempt failed: ") || !strings.Contains(errs, want) ||
		!strings.Contains(errs, "(GROUP=nightly in "+w.host.ConfPath()+")") {
		t.Fatalf("check --wait with an unknown group: %d %s", code, errs)
	}
	t.Logf("check --wait with an unknown group: %s", errs)
	for _, args := range [][]string{append(append([]string{"status"}, bus...), state...), append([]string{"history"}, state...)} {
		if code, out, errs := ctl(t, env, args...); code != 0 || !strings.Contains(out, "last error:") || !strings.Contains(out, want) {
			t.Fatalf("%s after a failed check: %d %s %s", args[0], code, out, errs)
		}
	}
	if code, _, _ := ctl(t, env, append([]string{"reset"}, bus...)...); code != 0 {
		t.Fatal("reset after the failed check")
	}

	// With updates disabled the agent ignores the request: check --wait says so.
	os.WriteFile(w.host.ConfPath(), []byte("SERVER=disabled\n"), 0o644)
	code, _, errs = ctl(t, env, append([]string{"check", "--wait", "--start-timeout", "300ms"}, bus...)...)
	if code != 1 || !strings.Contains(errs, "no update check started") {
		t.Fatalf("check --wait with updates disabled: %d %s", code, errs)
	}
	// The agent gone is a clear error.
	w.stop()
	code, _, errs = ctl(t, env, append([]string{"status"}, bus...)...)
	if code != 1 || !strings.Contains(errs, "not running") {
		t.Fatalf("status without an agent: %d %s", code, errs)
	}
}

func TestWatch(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out, errb syncBuf
	done := make(chan int, 1)
	go func() {
		done <- updatectl.Run(ctx, updatectl.Env{}, []string{"watch", "--bus", w.bus.Addr}, cli.IO{Stdout: &out, Stderr: &errb})
	}()
	for !strings.Contains(out.String(), "IDLE") {
		time.Sleep(10 * time.Millisecond)
	}
	ctl(t, updatectl.Env{}, "check", "--bus", w.bus.Addr)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), "UPDATED_NEED_REBOOT") {
		if time.Now().After(deadline) {
			t.Fatalf("watch output:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("watch exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"boot: steady, running 1.0.0 on USR-A", "CHECKING_FOR_UPDATE", "DOWNLOADING", "installing 2.0.0"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("watch output lacks %q:\n%s", want, out.String())
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestDownload(t *testing.T) {
	srv := omahatest.New(t)
	key := payloadtest.NewKey(t, "")
	trust := payloadtest.TrustRoot(t, 1, 0, key)
	dir := t.TempDir()
	trustPath := payloadtest.WriteTrustRoot(t, dir, trust)
	srv.CreateApp(t, payload.DefaultAppID, trust)
	p := filepath.Join(dir, "p.tsp")
	payloadtest.BuildBytes(t, payloadtest.Image(4<<20, 7), p, payloadtest.Options("2.0.0"), key)
	srv.Publish(t, "stable", p)
	want, _ := os.ReadFile(p)
	sum := sha256.Sum256(want)
	machine := omahatest.NewMachineID()
	host := fstest.MapFS{
		"etc/machine-id":     {Data: []byte(machine + "\n")},
		"usr/lib/os-release": {Data: []byte("ID=twinslot\nVERSION=1.0.0\nBOARD=amd64-usr\n")},
	}
	conf := filepath.Join(dir, "update.conf")
	os.WriteFile(conf, []byte("SERVER="+srv.UpdateURL+"\nGROUP=stable\n"), 0o644)
	env := updatectl.Env{Host: host}
	to := filepath.Join(dir, "out", "update.tsp")
	os.Mkdir(filepath.Dir(to), 0o755)

	// An interrupted earlier download: the first half is there already.
	os.WriteFile(to+".part", want[:len(want)/2], 0o644)
	code, out, errs := ctl(t, env, "download", "--to", to, "--config", conf, "--trust", trustPath, "--json")
	if code != 0 {
		t.Fatalf("download: %d %s %s", code, out, errs)
	}
	var rep updatectl.DownloadReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(to)
	if !bytes.Equal(got, want) || !rep.Offered || !rep.Resumed || !rep.Verified || rep.SHA256 != hex.EncodeToString(sum[:]) || rep.Version != "2.0.0" {
		t.Fatalf("report %+v, file ok %v", rep, bytes.Equal(got, want))
	}
	if _, err := os.Stat(to + ".part"); !os.IsNotExist(err) {
		t.Fatal("the .part file is left behind")
	}
	// Again: already there.
	if code, out, _ = ctl(t, env, "download", "--to", to, "--config", conf); code != 0 || !strings.Contains(out, "downloaded 2.0.0") {
		t.Fatalf("second download: %d %s", code, out)
	}
	// A corrupt partial file is detected by the checksum and removed, never renamed.
	os.Remove(to)
	bad := append([]byte(nil), want[:len(want)/2]...)
	bad[10] ^= 0xff
	os.WriteFile(to+".part", bad, 0o644)
	if code, _, errs = ctl(t, env, "download", "--to", to, "--config", conf); code != 1 || !strings.Contains(errs, "SHA-256") {
		t.Fatalf("corrupt partial: %d %s", code, errs)
	}
	if _, err := os.Stat(to); !os.IsNotExist(err) {
		t.Fatal("a file with the wrong checksum was given the final name")
	}
	// Up to date: nothing offered.
	if code, out, _ = ctl(t, env, "download", "--to", to, "--config", conf, "--version", "2.0.0"); code != 0 || !strings.Contains(out, "no update") {
		t.Fatalf("up to date: %d %s", code, out)
	}
	// Usage errors.
	if code, _, _ = ctl(t, env, "download"); code != 2 {
		t.Fatalf("download without --to: exit %d", code)
	}
}
