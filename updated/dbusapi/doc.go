// Package dbusapi is the D-Bus API of the twinslot update agent: the server side that updated
// exports and the client that updatectl (and anyone else) uses.
//
// # Contract
//
// Bus name com.coreos.update1, object /com/coreos/update1, two interfaces:
//
// com.coreos.update1.Manager, exactly Flatcar update_engine's, so locksmith and existing tools
// work unchanged:
//
//	GetStatus() → (x last_checked_time, d progress, s current_operation, s new_version, x new_size)
//	AttemptUpdate()            check for an update now (a no-op unless idle)
//	ResetStatus()              from IDLE: forget errors and backoff; from UPDATED_NEED_REBOOT:
//	                           undo the installed update (the running slot boots next again);
//	                           see below
//	signal StatusUpdate(x last_checked_time, d progress, s current_operation, s new_version, x new_size)
//
// current_operation is one of the UPDATE_STATUS_* strings (Operations). last_checked_time is
// Unix seconds; progress is 0..1 of the download; new_size is the payload's size in bytes.
// new_version is the version being installed or waiting for the reboot, the version on trial
// while VERIFYING, and "0.0.0" (NoVersion) when no update is known, as update_engine sends it.
//
// Where twinslot goes beyond update_engine, it reuses update_engine's names so existing tools
// keep working (locksmithd reacts only to UPDATED_NEED_REBOOT):
//
//	UPDATE_STATUS_VERIFYING   update_engine never sends it. twinslot sends it after booting a new
//	                          slot on trial while the health gate runs (and while the passed slot
//	                          is committed), with new_version = the version on trial. The boot is
//	                          then committed (IDLE, BootStatus committed) or, if the gate fails,
//	                          REPORTING_ERROR_EVENT and a reboot into the old slot (rolled-back).
//	                          AttemptUpdate does nothing and ResetStatus is refused meanwhile.
//
// What ResetStatus does depends on the state:
//
//	IDLE                      forget the failure count, the backoff and the versions that failed
//	                          on this host, so the next check may install them again.
//	UPDATED_NEED_REBOOT       cancel the installed update: the new slot is made unbootable
//	                          (priority 0), the running slot stays the next boot, the attempt is
//	                          recorded as cancelled and the agent returns to IDLE with new_version
//	                          "0.0.0". The next check may offer and install the same version again.
//	                          Unlike update_engine_client -reset_status, nothing is left for the
//	                          operator to undo by hand (no cgpt command).
//	anything else             refused with ErrorNotAllowed.
//
// io.twinslot.Updated1, what reboot coordination needs about the current boot:
//
//	GetBootStatus() → (s state, s booted_version, s previous_version, s slot)
//	signal BootStatus(s state, s booted_version, s previous_version, s slot)   on every change
//
// state is verifying (a new slot on trial, health gate running), committed (this boot is marked
// good), rolled-back (this boot fell back to the old slot after a bad new one, previous_version
// names the version that failed; also while the gate failed and the reboot into the old slot is
// pending) or steady (nothing pending). slot is USR-A or USR-B.
//
// Methods fail with the D-Bus error ErrorNotAllowed when the agent's state forbids them.
//
// Who may call is set by the system bus policy file shipped with updated
// (updated/dist/com.coreos.update1.conf): root owns the name and calls everything; the core user
// may also call AttemptUpdate and ResetStatus (as with update_engine); other users may call only
// the read-only methods.
package dbusapi
