package hostenv

import (
	"fmt"
	"os"
	"strings"

	"github.com/godbus/dbus/v5"
)

const (
	// MachineIDPath is where the machine id comes from by default.
	MachineIDPath = "/etc/machine-id"
	// DefaultSystemBus is the system bus when DBUS_SYSTEM_BUS_ADDRESS is unset.
	DefaultSystemBus = "unix:path=/var/run/dbus/system_bus_socket"
)

// SystemBusAddress returns DBUS_SYSTEM_BUS_ADDRESS from environ (KEY=VALUE entries) or the default.
func SystemBusAddress(environ []string) string {
	addr := DefaultSystemBus
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "DBUS_SYSTEM_BUS_ADDRESS="); ok && v != "" {
			addr = v
		}
	}
	return addr
}

// SystemBus connects to the system bus named by environ.
func SystemBus(environ []string) (*dbus.Conn, error) {
	addr := SystemBusAddress(environ)
	conn, err := dbus.Connect(addr)
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus %s: %w", addr, err)
	}
	return conn, nil
}

// MachineID returns override if set, else the content of MachineIDPath.
func MachineID(override string) (string, error) {
	if override != "" {
		return override, nil
	}
	b, err := os.ReadFile(MachineIDPath)
	if err != nil {
		return "", fmt.Errorf("read the machine id (or pass --id): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
