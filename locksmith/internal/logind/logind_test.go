package logind_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/locksmith/internal/dbustest"
	"github.com/twinslot/twinslot/locksmith/internal/logind"
)

func TestReboot(t *testing.T) {
	addr := dbustest.StartBus(t)
	fake := dbustest.ExportLogind(t, dbustest.Connect(t, addr))
	c := logind.New(dbustest.Connect(t, addr))
	ctx := t.Context()

	fake.FailWith("org.freedesktop.DBus.Error.AccessDenied")
	err := c.Reboot(ctx)
	var de dbus.Error
	if err == nil || !errors.As(err, &de) || !strings.Contains(err.Error(), "must run as root") {
		t.Fatalf("refused reboot: %v, want the D-Bus error with a hint", err)
	}
	if fake.Reboots() != 0 {
		t.Fatal("refused reboot counted")
	}
	fake.FailWith("")
	if err := c.Reboot(ctx); err != nil || fake.Reboots() != 1 {
		t.Fatalf("reboot: %v, %d reboots", err, fake.Reboots())
	}

	fake.SetInhibitors(
		logind.Inhibitor{What: "sleep:shutdown", Who: "updated", Why: "writing /usr", Mode: "block", PID: 42},
		logind.Inhibitor{What: "shutdown", Who: "NetworkManager", Why: "cleanup", Mode: "delay"},
		logind.Inhibitor{What: "sleep", Who: "desk", Why: "lid", Mode: "block"},
	)
	in, err := c.BlockingInhibitors(ctx)
	if err != nil || len(in) != 1 || in[0].Who != "updated" || in[0].String() != "updated (pid 42): writing /usr" {
		t.Fatalf("inhibitors: %+v %v", in, err)
	}
}

func TestNoLogind(t *testing.T) {
	addr := dbustest.StartBus(t)
	err := logind.New(dbustest.Connect(t, addr)).Reboot(t.Context())
	if err == nil || !strings.Contains(err.Error(), "is systemd-logind running") {
		t.Fatalf("no logind: %v", err)
	}
}
