// Package reboot is locksmithd's reboot coordination: it follows the update agent over D-Bus
// and, when an installed update needs a reboot, reboots the host when a reboot window is open,
// no inhibitor blocks it and (with a locking strategy) it holds a reboot slot of its group.
// After the reboot it gives the slot back only once the new boot is committed.
//
// Everything the host provides is injected (Deps): the update agent (UpdatedOverDBus), the
// reboot action (LogindRebooter, or a fake that emulates GRUB in a fleet simulation), the
// etcd store or FleetLock client, the clock and the file paths. So a simulation can run many
// daemons in one process.
//
// # Strategies
//
//	reboot     reboot when a window is open; no lock
//	etcd-lock  take a slot of the group in the etcd semaphore (package locksmith) first
//	fleetlock  take a slot from a FleetLock server first (POST /v1/pre-reboot)
//	off        never reboot; still touch RebootRequiredPath for kured
//
// # The reboot path (one pass of the loop; any "no" goes back to the top)
//
//  1. the agent reports UPDATE_STATUS_UPDATED_NEED_REBOOT (GetStatus at start, then
//     StatusUpdate signals); touch /run/reboot-required; if this host holds a slot it kept after
//     a rollback (etcd-lock), do not reboot: wait until an operator frees it (status
//     rolled-back, re-read every RetryMax)
//  2. wait for a window (status waiting-window)
//  3. shutdown inhibitors in block mode: postpone, re-checking, for at most InhibitMaxWait,
//     before taking a slot (status waiting-inhibitor); then go on and say so
//  4. take a slot, holder value = machine id, boot id, from version (booted_version), to
//     version (new_version); a full group waits on an etcd watch until the window closes
//     (status waiting-slot); etcd errors retry with jittered, capped backoff and never reboot
//     (status etcd-unavailable); an acquisition that fails or is cut off (the window closed, a
//     timeout) may still have taken the slot, so the host then gives back whatever slot it holds
//     (unlock-if-held, retried until done) before it waits again
//  5. re-check the window; closed: release the slot
//  6. optional drain hook with DrainTimeout; on failure release (or proceed, by DrainFailure)
//  7. re-check the window and the inhibitors right before rebooting; closed or blocked:
//     release, never hold a slot while waiting
//  8. mark the holder "rebooting" in a transaction fenced by the slot's token (proves the slot
//     is still ours), then ask logind to reboot and check its reply; a refusal releases the slot
//     and retries with backoff (status reboot-failed)
//
// # After a reboot (etcd-lock and fleetlock)
//
// At start the daemon looks for its own slot and decides with Decide, a pure function of the
// holder value, this boot's id and the agent's boot and update status:
//
//	same boot and still NEED_REBOOT        the daemon was killed before rebooting: go on (re-lock)
//	same boot, no reboot needed any more   release (the update was undone)
//	verifying                              wait for the next BootStatus
//	rolled-back                            keep the slot, mark the holder rolled-back, log at error
//	                                       level: the group, this host included, stops rebooting
//	                                       until an operator acts
//	committed or steady, booted_version    release
//	  = the holder's to-version (or the
//	  holder named none)
//	committed or steady, another version   keep the slot and log at error level
//
// FleetLock has no holder value, so before rebooting the daemon records the versions and boot id
// in StateDir/fleetlock.json (versioned JSON, written atomically) and decides from that record.
//
// # Status
//
// Status() is the current state with a sentence for people; every change is logged and written
// atomically to StatusPath (JSON, versioned) and CoordinatorPath (CoreOS coordinator.conf:
// NAME, STRATEGY, STATE=starting|running|reboot-planned|rebooting|disabled) when set.
package reboot
