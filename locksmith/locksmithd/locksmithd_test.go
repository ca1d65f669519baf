package locksmithd_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/fleetlock"
	"github.com/twinslot/twinslot/locksmith/locksmithd"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated/dbusapi/dbusapitest"
	"github.com/twinslot/twinslot/updated/dbustest"
)

const guard = 60 * time.Second

// logBuf collects the daemon's log and lets a test wait for a line.
type logBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait returns the first submatch of re once the log has it.
func (l *logBuf) wait(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(guard)
	for {
		l.mu.Lock()
		m := re.FindStringSubmatch(l.b.String())
		ch := l.changed
		l.mu.Unlock()
		if m != nil {
			return m[len(m)-1]
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("log never matched %s:\n%s", re, l.String())
		}
	}
}

type proc struct {
	log    *logBuf
	cancel context.CancelFunc
	done   chan int
}

func start(t *testing.T, env []string, args ...string) *proc {
	ctx, cancel := context.WithCancel(t.Context())
	p := &proc{log: newLogBuf(), cancel: cancel, done: make(chan int, 1)}
	go func() {
		p.done <- locksmithd.Run(ctx, args, env, cli.IO{Stdin: strings.NewReader(""), Stdout: p.log, Stderr: p.log})
	}()
	t.Cleanup(func() { cancel(); <-p.done })
	return p
}

func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case code := <-p.done:
		p.done <- code
		return code
	case <-time.After(guard):
		t.Fatal("locksmithd did not stop")
	}
	return -1
}

func paths(t *testing.T) []string {
	dir := t.TempDir()
	return []string{"--config", filepath.Join(dir, "update.conf"), "--status-file", filepath.Join(dir, "status.json"),
		"--coordinator-file", filepath.Join(dir, "coordinator.conf"), "--reboot-required-file", filepath.Join(dir, "reboot-required"),
		"--state-dir", filepath.Join(dir, "state")}
}

func TestFleetLockServerAlone(t *testing.T) {
	e := etcdtest.New(t)
	env := []string{"REBOOT_STRATEGY=off", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + filepath.Join(t.TempDir(), "no-bus"),
		"LOCKSMITHD_ENDPOINT=" + e.Endpoints[0]}
	p := start(t, env, append(paths(t), "--fleetlock-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--stale-after", "1ns")...)
	addr := p.log.wait(t, regexp.MustCompile(`serving FleetLock" addr=(\S+)`))
	metrics := p.log.wait(t, regexp.MustCompile(`serving metrics" addr=(\S+)`))
	ctx := t.Context()
	a := &fleetlock.Client{BaseURL: "http://" + addr, ID: "zincati-a", Group: "default", HTTP: &http.Client{Timeout: 30 * time.Second}}
	b := &fleetlock.Client{BaseURL: "http://" + addr, ID: "zincati-b", Group: "default", HTTP: &http.Client{Timeout: 30 * time.Second}}
	if err := a.PreReboot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PreReboot(ctx); !fleetlock.IsFull(err) {
		t.Fatalf("second client: %v, want full", err)
	}
	if err := a.SteadyState(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PreReboot(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metrics+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`locksmith_slots_max{group="default"} 1`, `locksmith_holders{group="default"} 1`,
		`locksmith_holder_age_seconds{group="default",id="zincati-b",state="locked"}`, `locksmith_fleetlock_requests_total{code="409"} 1`,
		`locksmith_etcd_up{group="default"} 1`, `locksmith_window_open 1`,
		`locksmith_holder_stale{group="default",id="zincati-b"} 1`, `locksmith_holder_unseen_seconds{group="default",id="zincati-b"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log)
	}
}

func TestEtcdLockEndToEnd(t *testing.T) {
	e := etcdtest.New(t, etcdtest.WithTLS())
	bus := dbustest.New(t)
	dbusapitest.Export(t, bus.Conn(t), dbusapitest.NeedReboot("2.0"), dbusapitest.Boot("steady", "1.0"))
	logind := dbustest.ExportLogind(t, bus.Conn(t))
	// A Flatcar host's layered files: the strategy and the etcd endpoint in /etc/flatcar's (as
	// locksmithd.service's EnvironmentFile reads it there), twinslot's file on top; the
	// environment wins over both (LOCKSMITHD_GROUP).
	args := paths(t)
	flatcar := filepath.Join(t.TempDir(), "flatcar-update.conf")
	os.WriteFile(flatcar, []byte("REBOOT_STRATEGY=reboot\nLOCKSMITHD_ENDPOINT="+e.Endpoints[0]+"\nLOCKSMITHD_GROUP=db\n"), 0o644)
	os.WriteFile(args[1], []byte("REBOOT_STRATEGY=etcd-lock\nGROUP=beta\n"), 0o644)
	args[1] = flatcar + "," + args[1]
	env := []string{"DBUS_SYSTEM_BUS_ADDRESS=" + bus.Addr, "LOCKSMITHD_ETCD_CAFILE=" + e.CAFile, "LOCKSMITHD_GROUP=web"}
	p := start(t, env, append(args, "--id", "m1")...)
	select {
	case <-logind.Rebooted():
	case <-time.After(guard):
		t.Fatalf("no reboot:\n%s", p.log)
	}
	lk, err := locksmith.NewStore(e.Client, "", nil).Held(t.Context(), "web", "m1")
	if err != nil || lk.Slot.Holder.ToVersion != "2.0" || lk.Slot.Holder.BootID == "" {
		t.Fatalf("holder: %+v %v", lk.Slot.Holder, err)
	}
	if b, err := os.ReadFile(args[3]); err != nil || !strings.Contains(string(b), `"state": "rebooting"`) {
		t.Fatalf("status file: %s %v", b, err)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.log)
	}
}

func TestBadConfiguration(t *testing.T) {
	noBus := "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + filepath.Join(t.TempDir(), "no-bus")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{name: "unknown flag", args: []string{"--frob"}, code: 2, want: "flag provided but not defined"},
		{name: "argument", args: []string{"extra"}, code: 2, want: "too many arguments"},
		{name: "bad env flag", env: []string{"LOCKSMITHD_DRAIN_TIMEOUT=soon"}, code: 2, want: "LOCKSMITHD_DRAIN_TIMEOUT"},
		{name: "unknown strategy", env: []string{"REBOOT_STRATEGY=sometimes"}, code: 1, want: "not one of"},
		{name: "CoreOS best-effort", env: []string{"REBOOT_STRATEGY=best-effort"}, code: 1, want: "removed from CoreOS locksmith"},
		{name: "window start only", env: []string{"LOCKSMITHD_REBOOT_WINDOW_START=mon 01:00"}, code: 1, want: "both"},
		{name: "bad window", env: []string{"REBOOT_WINDOW_START=25:00", "REBOOT_WINDOW_LENGTH=1h"}, code: 1, want: "hour 0-23"},
		{name: "bad zone", env: []string{"REBOOT_WINDOW_START=01:00", "REBOOT_WINDOW_LENGTH=1h", "REBOOT_WINDOW_TZ=Mars/Olympus"}, code: 1, want: "IANA"},
		{name: "fleetlock without url", env: []string{"REBOOT_STRATEGY=fleetlock"}, code: 1, want: "--fleetlock-url"},
		{name: "no bus", env: []string{"REBOOT_STRATEGY=reboot"}, code: 1, want: "system bus"},
		{name: "off without bus or server", env: []string{"REBOOT_STRATEGY=off"}, code: 0, want: "nothing to do"},
		{name: "help", args: []string{"--help"}, code: 0, want: "-fleetlock-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := locksmithd.Run(t.Context(), append(paths(t), tc.args...), append([]string{noBus}, tc.env...), cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out})
			if code != tc.code || !strings.Contains(out.String(), tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out.String())
			}
		})
	}
}
