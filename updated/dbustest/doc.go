// Package dbustest runs a private dbus-daemon per test, so D-Bus APIs are exercised over a
// real bus without touching the system bus, and puts on it the one system service a test
// cannot reach for real: a fake systemd-logind (Logind) that records reboots instead of
// rebooting and serves a scripted inhibitor list.
//
// The bus is `dbus-daemon --session` on a socket in t.TempDir(), killed at cleanup; tests skip
// with a clear message when dbus-daemon is not installed (CI installs the dbus package).
// Connections from Conn are closed at cleanup too. The update agent's own service is exported
// by updated's real exporter (see updated/dbusapi/dbusapitest for a scripted one).
package dbustest
