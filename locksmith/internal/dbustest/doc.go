// Package dbustest runs a private dbus-daemon per test and exports the two services locksmith
// talks to: the update agent's com.coreos.update1 (through updated's own exporter, dbusapi,
// with a scripted backend) and a fake systemd-logind that records reboots instead of rebooting.
package dbustest
