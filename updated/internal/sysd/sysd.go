// Package sysd holds updated's real host dependencies that talk to systemd: the health gate's
// system-state probe (org.freedesktop.systemd1 over D-Bus), the reboot action (logind over
// D-Bus, with its reply checked — go-systemd's login1.Reboot drops errors) and a slog handler
// writing to the journal.
package sysd

import (
	"context"
	"fmt"
	"sort"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Systemd answers the health gate's questions from systemd's manager object.
type Systemd struct {
	Conn *sdbus.Conn
}

// SystemState returns systemd's SystemState (as `systemctl is-system-running`).
func (s Systemd) SystemState(ctx context.Context) (string, error) {
	p, err := s.Conn.SystemStateContext(ctx)
	if err != nil {
		return "", fmt.Errorf("sysd: read systemd SystemState: %w", err)
	}
	v, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("sysd: systemd SystemState is %s, not a string", p.Value.Signature())
	}
	return v, nil
}

// FailedUnits names the units in the failed state, sorted.
func (s Systemd) FailedUnits(ctx context.Context) ([]string, error) {
	units, err := s.Conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return nil, fmt.Errorf("sysd: list failed units: %w", err)
	}
	out := make([]string, 0, len(units))
	for _, u := range units {
		out = append(out, u.Name)
	}
	sort.Strings(out)
	return out, nil
}

// Logind reboots the host through systemd-logind.
type Logind struct {
	Conn *dbus.Conn // the system bus
}

// Names of logind's manager.
const (
	LogindBusName   = "org.freedesktop.login1"
	LogindPath      = dbus.ObjectPath("/org/freedesktop/login1")
	LogindInterface = "org.freedesktop.login1.Manager"
)

// Reboot asks logind to reboot (interactive=false) and returns its error, e.g. when an
// inhibitor blocks the reboot or the caller lacks the privilege.
func (l Logind) Reboot(ctx context.Context) error {
	call := l.Conn.Object(LogindBusName, LogindPath).CallWithContext(ctx, LogindInterface+".Reboot", 0, false)
	if call.Err != nil {
		return fmt.Errorf("sysd: logind Reboot: %w", call.Err)
	}
	return nil
}
