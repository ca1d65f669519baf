package reboot

import (
	"testing"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/updated/dbusapi"
)

func TestDecide(t *testing.T) {
	need := dbusapi.Status{CurrentOperation: dbusapi.OpUpdatedNeedReboot, NewVersion: "2.0"}
	idle := dbusapi.Status{CurrentOperation: dbusapi.OpIdle}
	h := locksmith.Holder{ID: "m", BootID: "boot-1", FromVersion: "1.0", ToVersion: "2.0"}
	boot := func(state, booted, prev string) dbusapi.BootStatus {
		return dbusapi.BootStatus{State: state, BootedVersion: booted, PreviousVersion: prev, Slot: "USR-B"}
	}
	manual := locksmith.Holder{ID: "m"} // locksmithctl lock: no boot id, no version
	rolled := h
	rolled.State = locksmith.HolderRolledBack
	for _, tc := range []struct {
		name   string
		h      locksmith.Holder
		bootID string
		boot   dbusapi.BootStatus
		st     dbusapi.Status
		want   Action
	}{
		{name: "rolled back after the reboot keeps the slot", h: h, bootID: "boot-2", boot: boot(BootRolledBack, "1.0", "2.0"), st: idle, want: KeepRolledBack},
		{name: "rolled back, a new update staged, still keeps", h: h, bootID: "boot-2", boot: boot(BootRolledBack, "1.0", "2.0"), st: need, want: KeepRolledBack},
		{name: "booted another version keeps", h: h, bootID: "boot-2", boot: boot(BootCommitted, "1.5", ""), st: idle, want: KeepUnexpected},
		{name: "steady in the old version after the reboot keeps", h: h, bootID: "boot-2", boot: boot(BootSteady, "1.0", ""), st: idle, want: KeepUnexpected},
		{name: "verifying waits", h: h, bootID: "boot-2", boot: boot(BootVerifying, "2.0", "1.0"), st: idle, want: Wait},
		{name: "unknown boot state waits", h: h, bootID: "boot-2", boot: boot("confused", "2.0", ""), st: idle, want: Wait},
		{name: "killed before the reboot goes on", h: h, bootID: "boot-1", boot: boot(BootSteady, "1.0", ""), st: need, want: Continue},
		{name: "same boot, update undone, releases", h: h, bootID: "boot-1", boot: boot(BootSteady, "1.0", ""), st: idle, want: Release},
		{name: "same boot, marked rolled back, keeps", h: rolled, bootID: "boot-1", boot: boot(BootRolledBack, "1.0", "2.0"), st: idle, want: KeepRolledBack},
		{name: "committed to the version releases", h: h, bootID: "boot-2", boot: boot(BootCommitted, "2.0", "1.0"), st: idle, want: Release},
		{name: "steady in the version releases", h: h, bootID: "boot-2", boot: boot(BootSteady, "2.0", ""), st: idle, want: Release},
		{name: "manual lock released on a good boot", h: manual, bootID: "boot-2", boot: boot(BootSteady, "1.0", ""), st: idle, want: Release},
		{name: "manual lock kept while verifying", h: manual, bootID: "boot-2", boot: boot(BootVerifying, "1.0", ""), st: idle, want: Wait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := Decide(tc.h, tc.bootID, tc.boot, tc.st)
			if got != tc.want || why == "" {
				t.Fatalf("Decide = %v (%q), want %v", got, why, tc.want)
			}
		})
	}
}

// TestDecideRolledBackReason checks the reason names the versions truthfully both in the failed
// trial boot (still on the bad version, about to reboot) and after the fall-back.
func TestDecideRolledBackReason(t *testing.T) {
	h := locksmith.Holder{ID: "m", BootID: "boot-1", FromVersion: "1.0", ToVersion: "2.0"}
	idle := dbusapi.Status{CurrentOperation: dbusapi.OpIdle}
	for _, tc := range []struct {
		name, booted, prev, want string
	}{
		{name: "trial boot failed, reboot ahead", booted: "2.0", prev: "2.0", want: "version 2.0 failed its health gate; the host is going back to its old slot"},
		{name: "fell back", booted: "1.0", prev: "2.0", want: "version 2.0 failed and the host rolled back to 1.0"},
		{name: "previous unknown, holder names it", booted: "1.0", prev: "", want: "version 2.0 failed and the host rolled back to 1.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot := dbusapi.BootStatus{State: BootRolledBack, BootedVersion: tc.booted, PreviousVersion: tc.prev}
			got, why := Decide(h, "boot-2", boot, idle)
			if got != KeepRolledBack || why != tc.want {
				t.Fatalf("Decide = %v (%q), want %v (%q)", got, why, KeepRolledBack, tc.want)
			}
		})
	}
}
