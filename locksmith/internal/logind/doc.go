// Package logind asks systemd-logind to reboot the host over D-Bus and lists the shutdown
// inhibitors that would hold a reboot back.
//
// It calls org.freedesktop.login1.Manager methods on /org/freedesktop/login1 itself rather than
// through go-systemd's login1 package, whose Reboot drops the D-Bus reply: a refused reboot
// (access denied, logind missing) must be seen and reported, not mistaken for a reboot in
// progress.
//
//	Reboot(b interactive) → ()                 called with interactive=false
//	ListInhibitors() → a(ssssuu)               what, who, why, mode, uid, pid
//
// An inhibitor blocks a reboot when its "what" lists "shutdown" and its mode is "block"; "delay"
// inhibitors only postpone the shutdown briefly and are not reported.
package logind
