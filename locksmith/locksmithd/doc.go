// Package locksmithd is the locksmithd command: it reads update.conf and the LOCKSMITHD_*
// environment, builds the host's real dependencies (system bus for updated and logind, etcd
// client, FleetLock client or server, files under /run and /var/lib) and runs package reboot.
//
// update.conf is read as updated reads it (package updateconf): /usr/share/twinslot,
// /etc/coreos, /etc/flatcar, then /etc/twinslot, a later file winning key by key, the environment
// winning over every file. A flag comes from the command line, else LOCKSMITHD_<FLAG> in the
// environment, else LOCKSMITHD_<FLAG> in those files (Flatcar's locksmithd.service reads
// /etc/flatcar/update.conf as an EnvironmentFile, so hosts may keep LOCKSMITHD_ENDPOINT there).
//
// Configuration, as CoreOS locksmithd:
//
//	REBOOT_STRATEGY               reboot (default), etcd-lock, fleetlock, off (update.conf or environment)
//	REBOOT_WINDOW_START/LENGTH    windows, "[Day ]HH:MM" and a duration, comma lists for several;
//	                              LOCKSMITHD_REBOOT_WINDOW_START/LENGTH win over them in the same file
//	REBOOT_WINDOW_TZ              IANA zone of the windows (LOCKSMITHD_REBOOT_WINDOW_TZ wins); default local
//	-endpoint, -etcd-cafile, -etcd-certfile, -etcd-keyfile, -etcd-username, -etcd-password, -group, --id
//	                              etcd connection and holder identity; each also LOCKSMITHD_<FLAG>
//	--fleetlock-listen ADDR       also serve FleetLock from the etcd semaphore; with REBOOT_STRATEGY=off
//	                              and no system bus locksmithd is a FleetLock server alone
//	--fleetlock-url URL           the server for REBOOT_STRATEGY=fleetlock
//	--drain-command, --drain-timeout, --drain-failure   optional pre-reboot hook
//	--metrics-listen ADDR         Prometheus /metrics: locksmith_slots_max, _holders, _queue_length,
//	                              _holder_age_seconds, _holder_stale, _window_open, _state, _holding,
//	                              _etcd_up, _fleetlock_requests_total
//
// The update channel GROUP of update.conf is not the reboot group: the reboot group is -group.
package locksmithd
