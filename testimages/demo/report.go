package demo

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/testimages/fleet"
	"github.com/twinslot/twinslot/tools/cli"
)

// Report is the closing table and the verdict (--json prints it).
type Report struct {
	Hosts []ReportHost `json:"hosts"`
	// Holders are the reboot slots still held, by host name.
	Holders []string `json:"holders"`
	Max     int      `json:"max"`
	// HaltedReason is why the server halted the group ("" if it did not).
	HaltedReason string `json:"halted_reason"`
	// RebootPeak and HoldersPeak are the most hosts seen rebooting at once and the most slot
	// holders seen at once.
	RebootPeak  int    `json:"reboot_peak"`
	HoldersPeak int    `json:"holders_peak"`
	OK          bool   `json:"ok"`
	Verdict     string `json:"verdict"`
}

// ReportHost is one host's line.
type ReportHost struct {
	Name      string       `json:"name"`
	MachineID string       `json:"machine_id"`
	Version   string       `json:"version"`
	Slot      string       `json:"slot"`
	Committed bool         `json:"committed"`
	Lock      string       `json:"locksmithd"`
	History   string       `json:"history"`
	Boots     []fleet.Boot `json:"boots"`
}

// newReport judges the final state: the outcome the scenario expects, or what differs.
func newReport(st fleet.State, g admin.Group, max int, v *view) Report {
	r := Report{Max: max, HaltedReason: g.Policy.HaltedReason}
	var over []string
	r.RebootPeak, r.HoldersPeak, over = v.peaks()
	var problems []string
	var broken []string
	for _, h := range st.Hosts {
		r.Hosts = append(r.Hosts, ReportHost{Name: h.Name, MachineID: h.MachineID, Version: h.Version, Slot: h.Slot,
			Committed: h.Committed, Lock: h.Lock, History: h.History(), Boots: h.Boots})
		if h.Version != fleet.VersionGood || !h.Committed {
			problems = append(problems, fmt.Sprintf("%s runs %s (committed %v), want %s committed", h.Name, h.Version, h.Committed, fleet.VersionGood))
		}
		want := []fleet.Boot{{Version: fleet.VersionBase, Slot: "USR-A", Outcome: fleet.OutcomeSteady}, {Version: fleet.VersionGood, Slot: "USR-B", Outcome: fleet.OutcomeCommitted}}
		if slices.ContainsFunc(h.Boots, func(b fleet.Boot) bool { return b.Version == fleet.VersionBroken }) {
			broken = append(broken, h.Name)
			want = append(want, fleet.Boot{Version: fleet.VersionBroken, Slot: "USR-A", Outcome: fleet.OutcomeFailed},
				fleet.Boot{Version: fleet.VersionGood, Slot: "USR-B", Outcome: fleet.OutcomeRolledBack})
			if sl, ok := st.Holder(h.MachineID); !ok || sl.Holder.State != "rolled-back" {
				problems = append(problems, h.Name+" rolled back but does not keep its reboot slot")
			}
		}
		if !slices.Equal(h.Boots, want) {
			problems = append(problems, fmt.Sprintf("%s booted %s", h.Name, h.History()))
		}
	}
	for _, sl := range st.Holders {
		r.Holders = append(r.Holders, st.HolderName(sl))
	}
	if len(broken) != 1 {
		problems = append(problems, fmt.Sprintf("%s reached %d hosts, want exactly 1", fleet.VersionBroken, len(broken)))
	}
	if len(r.Holders) != len(broken) {
		problems = append(problems, fmt.Sprintf("%d reboot slots held at the end, want %d", len(r.Holders), len(broken)))
	}
	if r.HaltedReason == "" {
		problems = append(problems, "the server did not halt the group")
	}
	if len(over) > 0 {
		problems = append(problems, "more than max at once: "+strings.Join(over, ", "))
	}
	if r.RebootPeak == 0 {
		problems = append(problems, "no host ever rebooted")
	}
	if r.OK = len(problems) == 0; r.OK {
		r.Verdict = fmt.Sprintf("OK: %s runs committed on all %d hosts; %s reached only %s, which failed its health gate, rolled back "+
			"and keeps its reboot slot; the server halted the group; at most %d of %d hosts rebooted at once",
			fleet.VersionGood, len(st.Hosts), fleet.VersionBroken, broken[0], r.RebootPeak, max)
	} else {
		r.Verdict = "FAILED: " + strings.Join(problems, "; ")
	}
	return r
}

// rolledBackID is the machine id of the host that keeps its slot after a rollback.
func (r Report) rolledBackID() string {
	for _, h := range r.Hosts {
		if len(h.Boots) > 0 && h.Boots[len(h.Boots)-1].Outcome == fleet.OutcomeRolledBack {
			return h.MachineID
		}
	}
	return ""
}

// print writes the closing table.
func (r Report) print(w io.Writer) {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "HOST\tVERSION\tSLOT\tCOMMITTED\tREBOOT SLOT\tHISTORY (✓ committed, ✗ failed health gate, ↩ rolled back)")
	for _, h := range r.Hosts {
		committed := "no"
		if h.Committed {
			committed = "yes"
		}
		slot := "-"
		if slices.Contains(r.Holders, h.Name) {
			slot = "KEPT (" + h.Lock + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Version, h.Slot, committed, slot, h.History)
	}
	tw.Flush()
	fmt.Fprintf(w, "reboot slots held: %d/%d %s\n", len(r.Holders), r.Max, strings.Join(r.Holders, ", "))
	if r.HaltedReason != "" {
		fmt.Fprintf(w, "group %s halted by the server: %s\n", group, r.HaltedReason)
	}
}
