package updatectl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/slotrelease"
	"github.com/twinslot/twinslot/tools/cli"
)

func slotCommands(env Env) []cli.Command {
	return []cli.Command{
		{Name: "slots", Summary: "list the /usr slots: priority, tries, successful, version, active, next boot; --repair the GPT", Run: env.runSlots},
		{Name: "mark-good", Summary: "commit the booted slot: successful, no tries, top priority", Run: env.runMarkGood},
		{Name: "rollback", Summary: "make the other slot boot next, if it booted successfully before", Run: env.runRollback},
	}
}

// target is the disk a command works on and what is known about the booted slot
// (partition.FindDisk, the rule updated and payload apply share).
type target = partition.Where

// locate finds the disk (--disk, else the one holding the booted /usr) and the booted slot.
func (env Env) locate(disk string) (target, error) {
	return partition.FindDisk(env.Host, disk)
}

// active returns the booted slot of d, or ok=false when it is unknown or not on d: updatectl
// acts on and shows as active only the slot a boot names, never the committed slot of an image.
func active(t target, d *partition.Disk) (partition.Slot, bool) {
	s, booted, err := t.Active(d)
	return s, err == nil && booted
}

// SlotInfo is one slot in `updatectl slots --json`.
type SlotInfo struct {
	Number     int    `json:"number"`
	Label      string `json:"label"`
	PartUUID   string `json:"partuuid"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	Attributes string `json:"attributes"` // the 64-bit attribute word, hex
	Priority   int    `json:"priority"`
	Tries      int    `json:"tries"`
	Successful bool   `json:"successful"`
	Version    string `json:"version,omitempty"`
	Board      string `json:"board,omitempty"`
	Broken     bool   `json:"broken,omitempty"`
	Unreadable string `json:"unreadable,omitempty"` // why no version could be read
	Active     bool   `json:"active"`
	Next       bool   `json:"next"`
}

// SlotsReport is the output of `updatectl slots --json`.
type SlotsReport struct {
	Disk      string `json:"disk"`
	PrimaryOK bool   `json:"gpt_primary_ok"`
	BackupOK  bool   `json:"gpt_backup_ok"`
	// PrimaryError and BackupError say why a copy is not ok: damaged (repaired by the next
	// change or --repair), or valid in a layout twinslot does not write ("unsupported GPT
	// layout: run 'sgdisk …'"), which makes every change fail until it is fixed.
	PrimaryError string `json:"gpt_primary_error,omitempty"`
	BackupError  string `json:"gpt_backup_error,omitempty"`
	// UnsupportedLayout: a copy is valid but in a layout twinslot does not write (its error
	// wraps partition.ErrUnsupportedTable).
	UnsupportedLayout bool `json:"gpt_unsupported_layout,omitempty"`
	InSync            bool `json:"gpt_in_sync"`
	// Repair is what --repair did: "repaired", "not-needed", "refused" (a copy in a layout
	// twinslot does not write) or "failed"; RepairError why it was refused or failed.
	Repair      string     `json:"repair,omitempty"`
	RepairError string     `json:"repair_error,omitempty"`
	Active      string     `json:"active,omitempty"` // label of the booted slot, if known
	Next        string     `json:"next,omitempty"`   // label of the slot the next boot picks
	NextError   string     `json:"next_error,omitempty"`
	Slots       []SlotInfo `json:"slots"`
}

// What --repair did (SlotsReport.Repair).
const (
	RepairDone      = "repaired"
	RepairNotNeeded = "not-needed"
	RepairRefused   = "refused"
	RepairFailed    = "failed"
)

func (env Env) runSlots(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl slots", "[--disk PATH] [--repair] [--json]", `
List the /usr slots of the disk holding the booted /usr (or of --disk): partition number,
label, PARTUUID, priority, tries left, successful, the version in its filesystem, which
slot is booted and which one the next boot picks (GRUB's gptprio.next), and the state of
the two GPT copies (primary at the start of the disk, backup at its end).

A damaged or stale GPT copy is rewritten by the next change of the slots (an install,
mark-good, rollback); --repair rewrites it now, from the copy in use, changing nothing
else, and then lists the slots. A GPT that is valid but in a layout twinslot does not
write (its entry array elsewhere than at LBA 2, a disk grown after the image was written
to it) is never written: --repair refuses, with the error saying what to run (sgdisk -j 2,
sgdisk -e), and every change fails the same way until that is done. Exit status 1 when
the repair was refused or failed.`)
	disk := fs.String("disk", "", "disk or image `path` (default: the disk holding the booted /usr)")
	repair := fs.Bool("repair", false, "rewrite a damaged or stale GPT copy from the one in use (opens the disk read-write)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	t, err := env.locate(*disk)
	if err != nil {
		return err
	}
	var opts []partition.Option
	if !*repair {
		opts = append(opts, partition.ReadOnly())
	}
	d, err := partition.Open(t.Disk, opts...)
	if err != nil {
		return err
	}
	defer d.Close()
	var what string
	var repairErr error
	if *repair {
		what, repairErr = repairGPT(d)
	}
	rep, err := report(d, t)
	if err != nil {
		return err
	}
	rep.Repair = what
	if repairErr != nil {
		rep.RepairError = repairErr.Error()
	}
	if *asJSON {
		err = cli.PrintJSON(stdio.Stdout, rep)
	} else {
		printRepair(stdio, rep)
		printReport(stdio, rep, t)
	}
	if err == nil {
		err = repairErr
	}
	return err
}

// repairGPT runs Repair on d and says what it did (RepairDone, …) and, when it did not repair
// a copy that needed it, why.
func repairGPT(d *partition.Disk) (string, error) {
	repaired, err := d.Repair()
	switch {
	case errors.Is(err, partition.ErrUnsupportedTable):
		return RepairRefused, fmt.Errorf("updatectl slots --repair refused to write: %w", err)
	case err != nil:
		return RepairFailed, fmt.Errorf("updatectl slots --repair: %w", err)
	case repaired:
		return RepairDone, nil
	}
	return RepairNotNeeded, nil
}

func printRepair(stdio cli.IO, rep SlotsReport) {
	switch rep.Repair {
	case RepairDone:
		fmt.Fprintf(stdio.Stdout, "repaired the GPT of %s: both copies now hold the table in use\n", rep.Disk)
	case RepairNotNeeded:
		fmt.Fprintf(stdio.Stdout, "the GPT of %s needs no repair: both copies are valid and identical\n", rep.Disk)
	}
}

func report(d *partition.Disk, t target) (SlotsReport, error) {
	slots, err := d.Slots()
	if err != nil {
		return SlotsReport{}, err
	}
	h, err := d.Health()
	if err != nil {
		return SlotsReport{}, err
	}
	rep := SlotsReport{Disk: d.Path(), PrimaryOK: h.PrimaryErr == nil, BackupOK: h.BackupErr == nil, InSync: h.InSync,
		UnsupportedLayout: errors.Is(h.PrimaryErr, partition.ErrUnsupportedTable) || errors.Is(h.BackupErr, partition.ErrUnsupportedTable)}
	if h.PrimaryErr != nil {
		rep.PrimaryError = h.PrimaryErr.Error()
	}
	if h.BackupErr != nil {
		rep.BackupError = h.BackupErr.Error()
	}
	active, haveActive := active(t, d)
	if haveActive {
		rep.Active = active.Label
	}
	next, _, nextErr := partition.Next(slots)
	if nextErr != nil {
		rep.NextError = nextErr.Error()
	} else {
		rep.Next = next.Label
	}
	for _, s := range slots {
		si := SlotInfo{Number: s.Number, Label: s.Label, PartUUID: s.PartUUID, Start: s.Start, Size: s.Size,
			Attributes: fmt.Sprintf("%016x", uint64(s.Attr)), Priority: s.Attr.Priority(), Tries: s.Attr.Tries(),
			Successful: s.Attr.Successful(), Active: haveActive && s.Number == active.Number, Next: nextErr == nil && s.Number == next.Number}
		if rel, err := slotrelease.Read(d.SlotReader(s), s.Size); err == nil {
			si.Version, si.Board, si.Broken = rel.Version, rel.Board, rel.Broken
		} else {
			si.Unreadable = shortReason(err)
		}
		rep.Slots = append(rep.Slots, si)
	}
	return rep, nil
}

func shortReason(err error) string {
	if errors.Is(err, slotrelease.ErrNoRelease) {
		return "no /usr image"
	}
	return err.Error()
}

func printReport(stdio cli.IO, rep SlotsReport, t target) {
	w := stdio.Stdout
	fmt.Fprintf(w, "disk %s", rep.Disk)
	switch {
	case rep.UnsupportedLayout:
		// Never "the next change repairs it": every change is refused until the layout is fixed.
		fmt.Fprintf(w, " (GPT: primary ok=%v, backup ok=%v — in a layout twinslot does not write: every change of the slots fails until it is fixed)\n", rep.PrimaryOK, rep.BackupOK)
		if rep.PrimaryError != "" {
			fmt.Fprintf(w, "GPT primary: %s\n", rep.PrimaryError)
		}
		if rep.BackupError != "" {
			fmt.Fprintf(w, "GPT backup: %s\n", rep.BackupError)
		}
	case !rep.PrimaryOK || !rep.BackupOK:
		fmt.Fprintf(w, " (GPT: primary ok=%v, backup ok=%v — the next change repairs it, or run 'updatectl slots --repair')\n", rep.PrimaryOK, rep.BackupOK)
	case !rep.InSync:
		fmt.Fprint(w, " (GPT copies differ — the next change rewrites both, or run 'updatectl slots --repair')\n")
	default:
		fmt.Fprintln(w)
	}
	tw := cli.Table(w)
	fmt.Fprintln(tw, "#\tLABEL\tPARTUUID\tPRIORITY\tTRIES\tSUCCESSFUL\tVERSION\tSTATE")
	for _, s := range rep.Slots {
		version := s.Version + " " + s.Board
		if s.Unreadable != "" {
			version = "- (" + s.Unreadable + ")"
		}
		var state []string
		if s.Active {
			state = append(state, "active")
		}
		if s.Next {
			state = append(state, "boots next")
		}
		if s.Broken {
			state = append(state, "broken image")
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.Number, s.Label, s.PartUUID, s.Priority, s.Tries, yesNo(s.Successful), version, strings.Join(state, ", "))
	}
	tw.Flush()
	if rep.NextError != "" {
		fmt.Fprintf(w, "warning: the next boot will fail: %s\n", rep.NextError)
	}
	if rep.Active == "" {
		fmt.Fprintln(w, "active: unknown (the running system did not boot from this disk; for an image, 'mkimage boot' records it)")
	} else {
		fmt.Fprintf(w, "active: %s (from %s)\n", rep.Active, t.Booted.From)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// chosen is the slot a change applies to: --slot, else the booted one.
func chosen(d *partition.Disk, t target, slot, what string) (partition.Slot, error) {
	if slot != "" {
		return d.Slot(slot)
	}
	s, ok := active(t, d)
	if !ok {
		return partition.Slot{}, fmt.Errorf("cannot tell which slot of %s is booted (no %s from 'mkimage boot', and the running system did not boot from it); name the slot to %s with --slot", t.Disk, partition.CmdlinePath(t.Disk), what)
	}
	return s, nil
}

func (env Env) runMarkGood(ctx context.Context, stdio cli.IO, args []string) error {
	return env.change(stdio, args, "updatectl mark-good", `
Commit the booted slot after a healthy boot: successful=1, tries=0, top priority (as
flatcar-setgoodroot does), so it keeps booting. The health gate of updated does this
automatically; this command is for operators and tests. Refused for a slot that holds no
/usr image of a known version: committed, it would boot nothing for ever.`, "mark good",
		func(d *partition.Disk, s partition.Slot) (string, error) {
			// A committed slot boots for ever: never commit one that holds no image.
			rel, err := slotrelease.Read(d.SlotReader(s), s.Size)
			if err != nil {
				return "", fmt.Errorf("%v holds no /usr image of a known version (%s): committing it would make the host boot nothing; install an image into it first (updatectl download, payload apply), or name the slot that holds one with --slot", s, shortReason(err))
			}
			if err := d.MarkGood(s); err != nil {
				return "", err
			}
			s, err = d.SlotByNumber(s.Number)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("marked %v good: %v (version %s)", s, s.Attr, rel.Version), nil
		})
}

func (env Env) runRollback(ctx context.Context, stdio cli.IO, args []string) error {
	return env.change(stdio, args, "updatectl rollback", `
Make the other slot boot next, when it holds an image that booted successfully before and
was not marked bad; the booted slot stays as the fallback. Refused, with the reason, when
the other slot never booted, holds a pending update, or was marked bad. Reboot to apply.`, "roll back from",
		func(d *partition.Disk, from partition.Slot) (string, error) {
			to, err := d.Rollback(from)
			if err != nil {
				return "", err
			}
			version := ""
			if rel, err := slotrelease.Read(d.SlotReader(to), to.Size); err == nil {
				version = " (" + rel.Version + ")"
			}
			return fmt.Sprintf("%v%s boots next (%v); %v stays as fallback; reboot to apply", to, version, to.Attr, from), nil
		})
}

// change runs a command that changes the booted slot (or --slot) of the disk holding the
// booted /usr (or --disk), and prints what act reports.
func (env Env) change(stdio cli.IO, args []string, prog, help, what string, act func(*partition.Disk, partition.Slot) (string, error)) error {
	fs := stdio.FlagSet(prog, "[--disk PATH] [--slot SLOT]", help)
	disk := fs.String("disk", "", "disk or image `path` (default: the disk holding the booted /usr)")
	slot := fs.String("slot", "", "the slot (label, number or PARTUUID) to "+what+" instead of the booted one")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	t, err := env.locate(*disk)
	if err != nil {
		return err
	}
	d, err := partition.Open(t.Disk)
	if err != nil {
		return err
	}
	defer d.Close()
	s, err := chosen(d, t, *slot, what)
	if err != nil {
		return err
	}
	msg, err := act(d, s)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdio.Stdout, msg)
	return nil
}
