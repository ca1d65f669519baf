package sysd

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/journal"
	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/internal/dbustest"
)

// fakeSystemd exports the two calls the probe makes on org.freedesktop.systemd1.
type fakeSystemd struct{ state string }

type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

func (f *fakeSystemd) Get(iface, prop string) (dbus.Variant, *dbus.Error) {
	if iface != "org.freedesktop.systemd1.Manager" || prop != "SystemState" {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", nil)
	}
	return dbus.MakeVariant(f.state), nil
}

type fakeManager struct{}

func (fakeManager) ListUnitsFiltered(states []string) ([]unitStatus, *dbus.Error) {
	if !reflect.DeepEqual(states, []string{"failed"}) {
		return nil, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"want [failed]"})
	}
	return []unitStatus{{Name: "zeta.service", Path: "/u/z", JobPath: "/"}, {Name: "app.service", Path: "/u/a", JobPath: "/"}}, nil
}

func TestSystemd(t *testing.T) {
	bus := dbustest.New(t)
	srv := bus.Conn(t)
	srv.Export(&fakeSystemd{state: "degraded"}, "/org/freedesktop/systemd1", "org.freedesktop.DBus.Properties")
	srv.Export(fakeManager{}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
	if _, err := srv.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil {
		t.Fatal(err)
	}
	conn, err := sdbus.NewConnection(func() (*dbus.Conn, error) { return dbus.Connect(bus.Addr) })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := Systemd{Conn: conn}
	if st, err := s.SystemState(t.Context()); err != nil || st != "degraded" {
		t.Fatalf("SystemState = %q, %v", st, err)
	}
	if units, err := s.FailedUnits(t.Context()); err != nil || !reflect.DeepEqual(units, []string{"app.service", "zeta.service"}) {
		t.Fatalf("FailedUnits = %v, %v", units, err)
	}
}

// fakeLogind answers Reboot like logind: an error when an inhibitor blocks it.
type fakeLogind struct {
	mu      sync.Mutex
	calls   []bool
	blocked bool
}

func (f *fakeLogind) Reboot(interactive bool) *dbus.Error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, interactive)
	if f.blocked {
		return dbus.NewError("org.freedesktop.login1.OperationInProgress", []any{"Operation inhibited by \"app\""})
	}
	return nil
}

func TestLogindReboot(t *testing.T) {
	bus := dbustest.New(t)
	srv := bus.Conn(t)
	fake := &fakeLogind{}
	srv.Export(fake, LogindPath, LogindInterface)
	if _, err := srv.RequestName(LogindBusName, dbus.NameFlagDoNotQueue); err != nil {
		t.Fatal(err)
	}
	l := Logind{Conn: bus.Conn(t)}
	if err := l.Reboot(t.Context()); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	fake.blocked = true
	fake.mu.Unlock()
	err := l.Reboot(t.Context())
	if err == nil || !strings.Contains(err.Error(), "inhibited") {
		t.Fatalf("blocked Reboot = %v, want the logind error", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if !reflect.DeepEqual(fake.calls, []bool{false, false}) {
		t.Fatalf("calls %v", fake.calls)
	}
	// No logind at all is an error too, never a silent success.
	if err := (Logind{Conn: dbustest.New(t).Conn(t)}).Reboot(t.Context()); err == nil {
		t.Fatal("Reboot without logind succeeded")
	}
}

func TestJournalHandler(t *testing.T) {
	type sent struct {
		msg  string
		p    journal.Priority
		vars map[string]string
	}
	var got []sent
	h := NewJournalHandler(slog.LevelInfo)
	h.send = func(msg string, p journal.Priority, vars map[string]string) error {
		got = append(got, sent{msg, p, vars})
		return nil
	}
	log := slog.New(h).With("machine", "m1", "boot-id", "b1").WithGroup("update")
	log.Debug("hidden")
	log.Error("install failed", "state", "DOWNLOADING", slog.Group("payload", "version", "2.0.0"), "_x", 1)
	if len(got) != 1 {
		t.Fatalf("sent %d records, want 1", len(got))
	}
	want := map[string]string{"MACHINE": "m1", "BOOT_ID": "b1", "UPDATE_STATE": "DOWNLOADING",
		"UPDATE_PAYLOAD_VERSION": "2.0.0", "UPDATE__X": "1", "SYSLOG_IDENTIFIER": "updated"}
	if got[0].msg != "install failed" || got[0].p != journal.PriErr || !reflect.DeepEqual(got[0].vars, want) {
		t.Fatalf("sent %+v\nwant vars %v", got[0], want)
	}
	h.send = func(string, journal.Priority, map[string]string) error { return errors.New("no journal") }
	if err := h.Handle(t.Context(), slog.Record{}); err == nil {
		t.Fatal("a send error was dropped")
	}
	if fieldName("9lives") != "LIVES" || fieldName("__") != "FIELD" {
		t.Fatalf("fieldName: %q %q", fieldName("9lives"), fieldName("__"))
	}
}
