// Package sysd is the host daemons' real dependencies on systemd, shared by updated and
// locksmithd:
//
//   - Systemd: the health gate's system-state probe on org.freedesktop.systemd1
//     (SystemState as `systemctl is-system-running`, the failed units).
//   - Logind: the reboot action and the shutdown inhibitors, on
//     org.freedesktop.login1.Manager at /org/freedesktop/login1.
//   - JournalHandler: a slog.Handler writing structured records to the systemd journal.
//
// Logind calls the manager's methods itself rather than through go-systemd's login1 package,
// whose Reboot drops the D-Bus reply: a refused reboot (an inhibitor, access denied, logind
// missing) must be seen and reported, not mistaken for a reboot in progress.
//
//	Reboot(b interactive) → ()        called with interactive=false
//	ListInhibitors() → a(ssssuu)      what, who, why, mode, uid, pid
//
// An inhibitor blocks a reboot when its "what" lists "shutdown" and its mode is "block";
// "delay" inhibitors only postpone the shutdown briefly and are not reported. Errors from
// D-Bus replies keep the dbus.Error (errors.As works) and say what to check.
//
// sd_notify itself is go-systemd's daemon.SdNotify, called from updated's main
// (updated.Host.Notify); locksmithd does not use it.
package sysd
