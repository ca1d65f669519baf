// Package updated is twinslot's host update agent: it keeps a host's /usr A/B slots up to date
// from an Omaha server, proves every new boot healthy before committing it, rolls back when it
// is not, and tells the truth about all of it over D-Bus (package dbusapi) and to the server.
//
// # State machine
//
// The agent is an explicit state machine. Transition is a pure function from (Record, Event) to
// the next Record; Resume is a pure function classifying a start-up from the Record and the
// boot's facts (BootFacts, read from the GPT). Agent.Run persists every new Record (state.json,
// format version 1, temp file + fsync + rename + fsync of the directory) BEFORE it performs the
// new state's side effects, so a crash or power loss at any point re-enters the last persisted
// state, and every state's side effects are idempotent:
//
//	IDLE ──check due / AttemptUpdate──▶ CHECKING_FOR_UPDATE ──noupdate──▶ IDLE
//	CHECKING_FOR_UPDATE ──offer──▶ UPDATE_AVAILABLE ──13/1──▶ DOWNLOADING
//	DOWNLOADING ──payload.Install, 14/1──▶ FINALIZING ──PrepareInstall, 3/1──▶ UPDATED_NEED_REBOOT
//	any update step ──failure──▶ REPORTING_ERROR_EVENT ──3/0+code──▶ IDLE (backoff)
//	UPDATED_NEED_REBOOT ──ResetStatus──▶ RESETTING ──MarkBad(new slot)──▶ IDLE
//	(new boot, slot on trial) VERIFYING ──gate passed──▶ COMMITTING ──MarkGood, floor, PCR──▶ IDLE
//	VERIFYING ──gate failed──▶ ROLLING_BACK ──3/0/1001, Rollback+MarkBad, reboot──▶ (new boot)
//	(new boot, back on the old slot) COMMITTING ──MarkGood(old)──▶ IDLE, then 3/0/44
//
// COMMITTING, ROLLING_BACK and RESETTING are internal steps (GPT writes that must be persisted
// before they run); on D-Bus they read VERIFYING, REPORTING_ERROR_EVENT and IDLE.
//
// Re-entry after a crash: a check or an event is simply sent again (the server accepts
// repeats); DOWNLOADING runs payload.Install again, which reuses every chunk the target slot
// already holds; PrepareInstall, MarkGood, MarkBad and Rollback are idempotent. After a power
// loss Resume looks at the GPT: a slot on trial (successful=0) is verified, unless it is an
// update cancelled by ResetStatus whose MarkBad the power loss cut (RESETTING): RESETTING
// then marks it bad and reboots into the old slot, which finishes the reset; the old slot
// running after the new one was in the boot order is a rollback; a download or a FINALIZING
// cut before the flip continues. FINALIZING first copies the new slot's kernel and initrd to
// the ESP when the host has the layout (Paths.ESPDir, partition/esp), then flips; the copy
// writes only the target slot's files, and files already in place are left alone, so
// re-entering FINALIZING after a crash on either side of the flip is safe. The record entering
// FINALIZING already names the image the slot holds and the version to report once it is
// committed, so a power loss right after the flip (before UPDATED_NEED_REBOOT is persisted)
// boots the new slot on trial and commits it fully: floor, PCR and previousversion. A power
// loss while the new slot is being verified or committed uses up its single try, so the host
// comes back on the old slot and reports a rollback — the same as a new image that crashes. A
// slot always boots: the running slot is committed before its partner is written, the partner
// is made unbootable (BeginInstall) only when the first byte is about to be written, and
// MarkBad runs only after Rollback proved the old slot usable (otherwise the unhealthy slot is
// kept and committed so the host stays bootable, and the failure is reported; a kept slot
// never raises the anti-rollback floor).
//
// A GPT write that fails part-way while the new table is nevertheless in effect
// (partition.ErrWriteApplied: the disk reads it and GRUB boots by it) counts as done: the agent
// logs a warning, tries Repair for the stale copy (the next write repairs it too) and goes on,
// so a slot armed to boot is never reported as a failed install, and a slot marked bad stays
// marked. Any other write failure fails the step as before.
//
// # Talking to the server (Flatcar's dialect, see package omaha)
//
// Update check = ping + updatecheck + event 3/2 with previousversion by update_engine's rule
// ("0.0.0.0" before the first check, "" after each delivered check, the old version after an
// install), or 3/0 errorcode 44 after a rollback. While UPDATED_NEED_REBOOT only pings are
// sent. Events 13/1, 14/1, 3/1 mark download start, download end and install. Failures are
// 3/0 with update_engine's error codes (omaha.ErrorCode; 2000+HTTP status for a failed
// exchange) and twinslot's own above 1000: 1001 health gate failed, 1002 wrong app, board or
// version, 1003 below the security floor, 1004 unsafe boot state, 1005 the new slot's kernel
// could not be copied to the ESP; 35 (sent as 3/9) when the
// server offers a version that already failed on this host.
//
// What tells the server an update is committed: the first update check after the health gate
// passed carries 3/2 with previousversion = the version updated from — exactly what
// update_engine sends after a reboot, and what the twinslot server (and Nebraska) count as
// complete. It is never sent before the commit: checks only happen in a committed boot.
//
// # Schedule
//
// First check First±FirstFuzz/2 after start (7±5 min), then Period±PeriodFuzz/2 (45±5 min), or
// the server's PollInterval; after n consecutive failures the interval doubles n times up to
// 4 h with ±50 % jitter. A pending commit or rollback report is checked at once.
// update.conf is re-read at every check; SERVER=disabled (or empty) stops checks but not the
// health gate.
//
// # Health gate, floor, PCR
//
// A slot on trial passes the gate of package health: systemd running with no failed units,
// every /etc/twinslot/health.d executable exiting 0, every HEALTH_URLS URL answering 2xx,
// within HEALTH_TIMEOUT (default 5 min). The deadline counts from the gate's first start in the
// boot, timed by the boot's uptime (Record.GateUptime, CLOCK_BOOTTIME, which no step of the
// wall clock moves): a restart of the agent (a crash, systemd's Restart=) gets only what
// is left and fails at once when nothing is, so no restart extends the trial; a new boot starts
// a fresh deadline. Only a slot that passed is marked good, the anti-rollback floor
// advanced to its manifest's security version (TPM NV counter and floor.json, see package
// floor) and its image digest extended into PCR 15 (once per boot). Payloads are verified
// against the host trust root (/etc/twinslot/trust.json, else /usr/share/twinslot/trust.json;
// none means no install), the floor, the app id and the running board before anything is
// written.
//
// # Host
//
// Everything the agent touches is injected through Host: the disk (DiskOpener), the booted
// slot and release (BootFinder), the reboot action, the systemd probe, the TPM, the clock, the
// ids and the paths. updated/updatedcmd wires a real host; testimages/simhost a simulated one.
package updated
