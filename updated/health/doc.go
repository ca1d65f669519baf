// Package health is the post-boot health gate of the update agent: it decides whether a freshly
// booted /usr slot is good enough to commit.
//
// A gate passes when, before its deadline, every check has passed once:
//
//   - systemd: the system state (org.freedesktop.systemd1 SystemState) reached "running". It
//     waits while the state is "initializing" or "starting"; "degraded" (units failed after
//     start-up finished), "maintenance" and "stopping" fail the gate at once, naming the
//     failed units.
//   - every executable regular file in the health.d directory (/etc/twinslot/health.d), in
//     lexical order, run with a per-attempt timeout; exit status 0 passes. Hidden files,
//     editor backups (*~) and non-executables are skipped. A failing check is retried every
//     Retry until the deadline, so a check may wait for a service to come up.
//   - every configured URL: an HTTP GET answered 2xx passes (retried like executables).
//
// Gate.Used is what earlier runs took of the deadline: a gate run again after its process
// restarted gets only what is left, and fails at once when nothing is.
//
// The gate never passes by default: a probe error, a missing answer or the deadline are
// failures. Result names each check with its last detail, for the journal, the Omaha error
// report and updatectl.
package health
