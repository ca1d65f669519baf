// Package locksmithctl is the locksmithctl command: it inspects and changes the reboot
// semaphore in etcd and talks to the local update agent and logind, like CoreOS locksmithctl.
//
//	locksmithctl [global flags] status [-o text|json]   max, holders with age, versions, state
//	locksmithctl [global flags] lock                    take a slot for --id
//	locksmithctl [global flags] unlock [--force ID]     release --id's slot, or break ID's
//	locksmithctl [global flags] set-max N               change how many hosts may reboot at once
//	locksmithctl [global flags] set-policy --lease-ttl D --stale hold|expire
//	locksmithctl [global flags] send-need-reboot        emit StatusUpdate(UPDATED_NEED_REBOOT) on the system bus
//	locksmithctl [global flags] reboot                  take a slot, then reboot through logind
//
// Global flags (before or after the command): -endpoint (repeatable or comma-separated),
// -etcd-cafile, -etcd-certfile, -etcd-keyfile, -etcd-username, -etcd-password, -group, --id
// (default /etc/machine-id), -timeout. Each may also come from the environment as LOCKSMITHCTL_<FLAG>
// ("etcd-cafile" is LOCKSMITHCTL_ETCD_CAFILE); the command line wins.
package locksmithctl
