package hostenv

import "testing"

func TestSystemBusAddress(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, DefaultSystemBus},
		{[]string{"DBUS_SYSTEM_BUS_ADDRESS="}, DefaultSystemBus},
		{[]string{"PATH=/bin", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/tmp/bus"}, "unix:path=/tmp/bus"},
	} {
		if got := SystemBusAddress(tc.env); got != tc.want {
			t.Errorf("SystemBusAddress(%q) = %q, want %q", tc.env, got, tc.want)
		}
	}
	if id, err := MachineID("override"); err != nil || id != "override" {
		t.Errorf("MachineID(override) = %q, %v", id, err)
	}
}
