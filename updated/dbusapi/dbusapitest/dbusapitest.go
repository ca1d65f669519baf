package dbusapitest

import (
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/dbusapi"
)

// Agent is a scripted update agent behind updated's real D-Bus exporter.
type Agent struct {
	mu     sync.Mutex
	status dbusapi.Status
	boot   dbusapi.BootStatus
	srv    *dbusapi.Server
}

// Export exports com.coreos.update1 on conn with the given initial state.
func Export(t testing.TB, conn *dbus.Conn, st dbusapi.Status, boot dbusapi.BootStatus) *Agent {
	t.Helper()
	u := &Agent{status: st, boot: boot}
	srv, err := dbusapi.Export(conn, u)
	if err != nil {
		t.Fatal(err)
	}
	u.srv = srv
	return u
}

// Status implements dbusapi.Backend.
func (u *Agent) Status() dbusapi.Status { u.mu.Lock(); defer u.mu.Unlock(); return u.status }

// BootStatus implements dbusapi.Backend.
func (u *Agent) BootStatus() dbusapi.BootStatus { u.mu.Lock(); defer u.mu.Unlock(); return u.boot }

// AttemptUpdate implements dbusapi.Backend.
func (u *Agent) AttemptUpdate() error { return nil }

// ResetStatus implements dbusapi.Backend.
func (u *Agent) ResetStatus() error { return nil }

// SetStatus changes the status and emits StatusUpdate.
func (u *Agent) SetStatus(t testing.TB, st dbusapi.Status) {
	u.mu.Lock()
	u.status = st
	u.mu.Unlock()
	if err := u.srv.EmitStatus(st); err != nil {
		t.Fatal(err)
	}
}

// SetBoot changes the boot status and emits BootStatus.
func (u *Agent) SetBoot(t testing.TB, b dbusapi.BootStatus) {
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
