package sysd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Names of logind's manager.
const (
	LogindBusName   = "org.freedesktop.login1"
	LogindPath      = dbus.ObjectPath("/org/freedesktop/login1")
	LogindInterface = "org.freedesktop.login1.Manager"
)

// Logind reboots the host through systemd-logind and lists what holds a reboot back.
type Logind struct {
	Conn *dbus.Conn // the system bus
}

// Inhibitor is one entry of logind's ListInhibitors.
type Inhibitor struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}

// String describes the inhibitor for an operator: who holds it and why.
func (i Inhibitor) String() string {
	return fmt.Sprintf("%s (pid %d): %s", i.Who, i.PID, i.Why)
}

// Reboot asks logind to reboot now (interactive=false) and returns its refusal, e.g. when an
// inhibitor blocks the reboot, the caller lacks the privilege or logind is not running.
func (l Logind) Reboot(ctx context.Context) error {
	call := l.Conn.Object(LogindBusName, LogindPath).CallWithContext(ctx, LogindInterface+".Reboot", 0, false)
	if call.Err != nil {
		return fmt.Errorf("sysd: logind refused Reboot: %w", describe(call.Err))
	}
	return nil
}

// BlockingInhibitors lists the inhibitors that block a shutdown or reboot: "what" lists
// "shutdown" and the mode is "block" ("delay" inhibitors only postpone it briefly).
func (l Logind) BlockingInhibitors(ctx context.Context) ([]Inhibitor, error) {
	var raw []struct {
		What, Who, Why, Mode string
		UID, PID             uint32
	}
	call := l.Conn.Object(LogindBusName, LogindPath).CallWithContext(ctx, LogindInterface+".ListInhibitors", 0)
	if err := call.Store(&raw); err != nil {
		return nil, fmt.Errorf("sysd: logind ListInhibitors: %w", describe(err))
	}
	var out []Inhibitor
	for _, r := range raw {
		if r.Mode == "block" && hasItem(r.What, "shutdown") {
			out = append(out, Inhibitor(r))
		}
	}
	return out, nil
}

// hasItem reports whether the colon-separated list holds item.
func hasItem(list, item string) bool {
	for w := range strings.SplitSeq(list, ":") {
		if w == item {
			return true
		}
	}
	return false
}

// describe adds to a D-Bus error reply what an operator can do about it.
func describe(err error) error {
	var de dbus.Error
	if !errors.As(err, &de) {
		return err
	}
	msg := de.Name
	switch de.Name {
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		msg += " (is systemd-logind running?)"
	case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		msg += " (the daemon must run as root)"
	}
	return fmt.Errorf("%s: %w", msg, err)
}
