package reboot

import (
	"fmt"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

// Boot states of the update agent (io.twinslot.Updated1 BootStatus.State).
const (
	BootVerifying  = "verifying"
	BootCommitted  = "committed"
	BootRolledBack = "rolled-back"
	BootSteady     = "steady"
)

// Action is what to do with a slot this host holds at start.
type Action int

const (
	// Release the slot: the reboot it was taken for is done (or no longer needed).
	Release Action = iota
	// Continue the reboot: the daemon stopped between taking the slot and rebooting.
	Continue
	// Wait for the agent's next BootStatus: the new boot is still being verified.
	Wait
	// KeepRolledBack keeps the slot on purpose: the new boot failed and fell back.
	KeepRolledBack
	// KeepUnexpected keeps the slot: the host booted a version other than the one it rebooted for.
	KeepUnexpected
)

func (a Action) String() string {
	return [...]string{"release", "continue", "wait", "keep-rolled-back", "keep-unexpected"}[a]
}

// Decide says what to do with the slot held by h, in the boot bootID, given the agent's boot
// status and update status. It is pure; the table in the package doc lists its rules.
func Decide(h locksmith.Holder, bootID string, boot dbusapi.BootStatus, st dbusapi.Status) (Action, string) {
	needReboot := st.CurrentOperation == dbusapi.OpUpdatedNeedReboot
	if h.BootID != "" && h.BootID == bootID {
		if needReboot {
			return Continue, "slot taken in this boot and the update still needs a reboot"
		}
		if h.State != locksmith.HolderRolledBack {
			return Release, "slot taken in this boot but no reboot is needed any more"
		}
	}
	switch boot.State {
	case BootVerifying:
		return Wait, fmt.Sprintf("booted %s, health gate running", boot.BootedVersion)
	case BootRolledBack:
		failed := orUnknown(boot.PreviousVersion, h.ToVersion)
		if boot.BootedVersion == failed {
			// The gate failed in the trial boot itself: the reboot into the old slot is still ahead.
			return KeepRolledBack, fmt.Sprintf("version %s failed its health gate; the host is going back to its old slot", failed)
		}
		return KeepRolledBack, fmt.Sprintf("version %s failed and the host rolled back to %s", failed, boot.BootedVersion)
	case BootCommitted, BootSteady:
		if h.ToVersion == "" || boot.BootedVersion == h.ToVersion {
			return Release, fmt.Sprintf("boot %s %s", boot.BootedVersion, boot.State)
		}
		return KeepUnexpected, fmt.Sprintf("rebooted for %s but booted %s (%s)", h.ToVersion, boot.BootedVersion, boot.State)
	}
	return Wait, fmt.Sprintf("update agent reports unknown boot state %q", boot.State)
}

func orUnknown(v, fallback string) string {
	if v != "" {
		return v
	}
	if fallback != "" {
		return fallback
	}
	return "(unknown)"
}
