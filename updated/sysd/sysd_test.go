package sysd_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/dbustest"
	"github.com/twinslot/twinslot/updated/sysd"
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
	s := sysd.Systemd{Conn: conn}
	if st, err := s.SystemState(t.Context()); err != nil || st != "degraded" {
		t.Fatalf("SystemState = %q, %v", st, err)
	}
	if units, err := s.FailedUnits(t.Context()); err != nil || !reflect.DeepEqual(units, []string{"app.service", "zeta.service"}) {
		t.Fatalf("FailedUnits = %v, %v", units, err)
	}
}

func TestLogindReboot(t *testing.T) {
	bus := dbustest.New(t)
	fake := dbustest.ExportLogind(t, bus.Conn(t))
	l := sysd.Logind{Conn: bus.Conn(t)}
	for _, tc := range []struct {
		name, failWith, wantErr string
	}{
		{name: "inhibited", failWith: "org.freedesktop.login1.OperationInProgress", wantErr: "OperationInProgress"},
		{name: "not root", failWith: "org.freedesktop.DBus.Error.AccessDenied", wantErr: "must run as root"},
		{name: "accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fake.Reboots()
			fake.FailWith(tc.failWith)
			err := l.Reboot(t.Context())
			if tc.wantErr == "" {
				if err != nil || fake.Reboots() != before+1 {
					t.Fatalf("Reboot = %v, %d reboots before, %d after", err, before, fake.Reboots())
				}
				return
			}
			var de dbus.Error
			if err == nil || !errors.As(err, &de) || de.Name != tc.failWith || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Reboot = %v, want the D-Bus error %s mentioning %q", err, tc.failWith, tc.wantErr)
			}
			if fake.Reboots() != before {
				t.Fatal("a refused reboot was counted")
			}
		})
	}
	if calls := fake.Calls(); !reflect.DeepEqual(calls, []bool{false, false, false}) {
		t.Fatalf("Reboot calls (interactive flags) %v, want non-interactive every time", calls)
	}
}

func TestLogindMissing(t *testing.T) {
	// No logind at all is an error too, never a silent success.
	err := sysd.Logind{Conn: dbustest.New(t).Conn(t)}.Reboot(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is systemd-logind running") {
		t.Fatalf("Reboot without logind = %v, want an error asking whether logind runs", err)
	}
	if _, err := (sysd.Logind{Conn: dbustest.New(t).Conn(t)}).BlockingInhibitors(t.Context()); err == nil {
		t.Fatal("BlockingInhibitors without logind succeeded")
	}
}

func TestBlockingInhibitors(t *testing.T) {
	bus := dbustest.New(t)
	fake := dbustest.ExportLogind(t, bus.Conn(t))
	l := sysd.Logind{Conn: bus.Conn(t)}
	fake.SetInhibitors(
		sysd.Inhibitor{What: "sleep:shutdown", Who: "updated", Why: "writing /usr", Mode: "block", PID: 42},
		sysd.Inhibitor{What: "shutdown", Who: "NetworkManager", Why: "cleanup", Mode: "delay"},
		sysd.Inhibitor{What: "sleep", Who: "desk", Why: "lid", Mode: "block"},
		sysd.Inhibitor{What: "shutdownx", Who: "lookalike", Why: "not shutdown", Mode: "block"},
	)
	in, err := l.BlockingInhibitors(t.Context())
	if err != nil || len(in) != 1 || in[0].Who != "updated" || in[0].String() != "updated (pid 42): writing /usr" {
		t.Fatalf("BlockingInhibitors = %+v, %v; want only the blocking shutdown one", in, err)
	}
	fake.SetInhibitors()
	if in, err := l.BlockingInhibitors(t.Context()); err != nil || len(in) != 0 {
		t.Fatalf("BlockingInhibitors with none = %+v, %v", in, err)
	}
}
