package sysd

import (
	"context"
	"fmt"
	"sort"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
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
