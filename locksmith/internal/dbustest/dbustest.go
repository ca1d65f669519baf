package dbustest

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/locksmith/internal/logind"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

// StartBus starts a private dbus-daemon and returns its address. The test is skipped when
// dbus-daemon is not installed.
func StartBus(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (Debian package dbus): skipping D-Bus test")
	}
	addr := "unix:path=" + filepath.Join(t.TempDir(), "bus")
	cmd := exec.Command(bin, "--session", "--nofork", "--nopidfile", "--address="+addr, "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if l == "" {
			t.Fatal("dbus-daemon printed no address")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start in 10s")
	}
	return ""
}

// Connect opens a connection to the bus at addr, closed when the test ends.
func Connect(t testing.TB, addr string) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Logind is a fake org.freedesktop.login1.Manager.
type Logind struct {
	mu         sync.Mutex
	reboots    int
	failWith   string
	inhibitors []logind.Inhibitor
	rebooted   chan struct{}
}

// ExportLogind exports a fake logind on conn and takes its bus name.
func ExportLogind(t testing.TB, conn *dbus.Conn) *Logind {
	t.Helper()
	l := &Logind{rebooted: make(chan struct{}, 100)}
	if err := conn.Export(l, logind.ObjectPath, logind.Manager); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName(logind.BusName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("take %s: %v %v", logind.BusName, r, err)
	}
	return l
}

// Reboot is the D-Bus method.
func (l *Logind) Reboot(interactive bool) *dbus.Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failWith != "" {
		return dbus.NewError(l.failWith, []any{"refused by the test"})
	}
	l.reboots++
	l.rebooted <- struct{}{}
	return nil
}

// ListInhibitors is the D-Bus method.
func (l *Logind) ListInhibitors() ([]struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}, *dbus.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]struct {
		What, Who, Why, Mode string
		UID, PID             uint32
	}, len(l.inhibitors))
	for i, in := range l.inhibitors {
		out[i].What, out[i].Who, out[i].Why, out[i].Mode, out[i].UID, out[i].PID = in.What, in.Who, in.Why, in.Mode, in.UID, in.PID
	}
	return out, nil
}

// Reboots is how many reboots logind accepted.
func (l *Logind) Reboots() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reboots
}

// Rebooted receives once per accepted reboot.
func (l *Logind) Rebooted() <-chan struct{} { return l.rebooted }

// FailWith makes Reboot reply with the D-Bus error name (empty: succeed).
func (l *Logind) FailWith(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failWith = name
}

// SetInhibitors replaces the inhibitor list.
func (l *Logind) SetInhibitors(in ...logind.Inhibitor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inhibitors = in
}

// Updated is a scripted update agent behind updated's real D-Bus exporter.
type Updated struct {
	mu     sync.Mutex
	status dbusapi.Status
	boot   dbusapi.BootStatus
	srv    *dbusapi.Server
}

// ExportUpdated exports com.coreos.update1 on conn with the given initial state.
func ExportUpdated(t testing.TB, conn *dbus.Conn, st dbusapi.Status, boot dbusapi.BootStatus) *Updated {
	t.Helper()
	u := &Updated{status: st, boot: boot}
	srv, err := dbusapi.Export(conn, u)
	if err != nil {
		t.Fatal(err)
	}
	u.srv = srv
	return u
}

// Status implements dbusapi.Backend.
func (u *Updated) Status() dbusapi.Status { u.mu.Lock(); defer u.mu.Unlock(); return u.status }

// BootStatus implements dbusapi.Backend.
func (u *Updated) BootStatus() dbusapi.BootStatus { u.mu.Lock(); defer u.mu.Unlock(); return u.boot }

// AttemptUpdate implements dbusapi.Backend.
func (u *Updated) AttemptUpdate() error { return nil }

// ResetStatus implements dbusapi.Backend.
func (u *Updated) ResetStatus() error { return nil }

// SetStatus changes the status and emits StatusUpdate.
func (u *Updated) SetStatus(t testing.TB, st dbusapi.Status) {
	u.mu.Lock()
	u.status = st
	u.mu.Unlock()
	if err := u.srv.EmitStatus(st); err != nil {
		t.Fatal(err)
	}
}

// SetBoot changes the boot status and emits BootStatus.
func (u *Updated) SetBoot(t testing.TB, b dbusapi.BootStatus) {
	u.mu.Lock()
	u.boot = b
	u.mu.Unlock()
	if err := u.srv.EmitBootStatus(b); err != nil {
		t.Fatal(err)
	}
}

// NeedReboot is the status after an installed update to version.
func NeedReboot(version string) dbusapi.Status {
	return dbusapi.Status{LastCheckedTime: 1700000000, Progress: 1, CurrentOperation: dbusapi.OpUpdatedNeedReboot, NewVersion: version, NewSize: 1 << 20}
}

// Idle is the status with nothing to do.
func Idle() dbusapi.Status {
	return dbusapi.Status{LastCheckedTime: 1700000000, CurrentOperation: dbusapi.OpIdle}
}

// Boot is a boot status in state with the booted version.
func Boot(state, booted string) dbusapi.BootStatus {
	return dbusapi.BootStatus{State: state, BootedVersion: booted, Slot: "USR-A"}
}

// String describes l for failure messages.
func (l *Logind) String() string { return fmt.Sprintf("logind(reboots=%d)", l.Reboots()) }
