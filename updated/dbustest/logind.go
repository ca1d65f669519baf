package dbustest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/sysd"
)

// Logind is a fake org.freedesktop.login1.Manager: Reboot records the call and succeeds (or
// fails with the error set by FailWith); ListInhibitors returns the list set by SetInhibitors.
type Logind struct {
	mu         sync.Mutex
	calls      []bool // the interactive argument of every Reboot call
	reboots    int
	failWith   string
	inhibitors []sysd.Inhibitor
	rebooted   chan struct{}
}

// ExportLogind exports a fake logind on conn and takes its bus name.
func ExportLogind(t testing.TB, conn *dbus.Conn) *Logind {
	t.Helper()
	l := &Logind{rebooted: make(chan struct{}, 100)}
	if err := conn.Export(l, sysd.LogindPath, sysd.LogindInterface); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName(sysd.LogindBusName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("take %s: %v %v", sysd.LogindBusName, r, err)
	}
	return l
}

// Reboot is the D-Bus method.
func (l *Logind) Reboot(interactive bool) *dbus.Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, interactive)
	if l.failWith != "" {
		return dbus.NewError(l.failWith, []any{"refused by the test"})
	}
	l.reboots++
	l.rebooted <- struct{}{}
	return nil
}

// ListInhibitors is the D-Bus method.
func (l *Logind) ListInhibitors() ([]sysd.Inhibitor, *dbus.Error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sysd.Inhibitor(nil), l.inhibitors...), nil
}

// Reboots is how many reboots logind accepted.
func (l *Logind) Reboots() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reboots
}

// Calls returns the interactive argument of every Reboot call, accepted or refused.
func (l *Logind) Calls() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bool(nil), l.calls...)
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
func (l *Logind) SetInhibitors(in ...sysd.Inhibitor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inhibitors = in
}

// String describes l for failure messages.
func (l *Logind) String() string { return fmt.Sprintf("logind(reboots=%d)", l.Reboots()) }
