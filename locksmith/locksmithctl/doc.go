// Package locksmithctl is the locksmithctl command: it inspects and changes the reboot
// semaphore in etcd and talks to the local update agent and logind, like CoreOS locksmithctl.
//
//	locksmithctl [global flags] status [--long] [--stale-after D]   Available, Max, holders (CoreOS format)
//	locksmithctl [global flags] lock [ID]               take a slot for machine ID (default: this machine)
//	locksmithctl [global flags] unlock [ID]             release machine ID's slot (default: this machine's)
//	locksmithctl [global flags] set-max N               change how many hosts may reboot at once
//	locksmithctl [global flags] set-policy --lease-ttl D --stale hold|expire
//	locksmithctl [global flags] send-need-reboot        emit StatusUpdate(UPDATED_NEED_REBOOT) on the system bus
//	locksmithctl [global flags] reboot                  take a slot, then reboot through logind
//
// Global flags, before or after the command, with one dash or two: -endpoint (repeatable or
// comma-separated), -etcd-cafile, -etcd-certfile, -etcd-keyfile, -etcd-username, -etcd-password,
// -group, -debug, -version, and twinslot's --id (this machine's id; default /etc/machine-id),
// -timeout and --json. Each may also come from the environment as LOCKSMITHCTL_<FLAG>
// ("etcd-cafile" is LOCKSMITHCTL_ETCD_CAFILE); the command line wins. Main reads the process
// environment and passes it to Run.
//
// status prints exactly what CoreOS locksmithctl prints (Available, Max, a blank line, MACHINE ID
// and the sorted holder ids), so scripts that read it keep working; holders that look gone are
// reported on stderr with the command that frees their slot. --long adds each holder's slot,
// host, state, age and versions; --json prints StatusJSON. With --json every other command prints
// a JSON object of what it did. "-o json", the older spelling, still works and says it is
// deprecated.
package locksmithctl
