package updatectl

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated"
)

// HistoryReport is the output of `updatectl history --json`.
type HistoryReport struct {
	State      updated.State      `json:"state"`
	Boot       updated.BootStatus `json:"boot"`
	Current    *updated.Attempt   `json:"current,omitempty"` // the attempt in progress
	Attempts   []updated.Attempt  `json:"attempts"`          // finished, oldest first
	BadVersion []string           `json:"bad_versions,omitempty"`
	LastError  *updated.Failure   `json:"last_error,omitempty"`
}

func (env Env) runHistory(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl history", "[--json] [--state-dir DIR]", `
List the update attempts updated recorded on this host (the last 50), oldest first: when,
from which version to which, the outcome (committed, rolled-back, failed, cancelled,
interrupted, or installed while waiting for the reboot) and the error reported.`)
	asJSON := fs.Bool("json", false, "print JSON")
	dir := fs.String("state-dir", DefaultStateDir, "updated's state `directory`")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	rec, err := updated.LoadRecord(filepath.Join(*dir, updated.StateFile))
	if err != nil {
		return err
	}
	rep := HistoryReport{State: rec.State, Boot: rec.Boot, Current: rec.Attempt, Attempts: rec.History,
		BadVersion: rec.BadVersions, LastError: rec.LastError}
	if rep.Attempts == nil {
		rep.Attempts = []updated.Attempt{}
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, rep)
	}
	all := append([]updated.Attempt(nil), rec.History...)
	if rec.Attempt != nil {
		all = append(all, *rec.Attempt)
	}
	if len(all) == 0 {
		fmt.Fprintln(stdio.Stdout, "no update attempts recorded")
		printLastError(stdio.Stdout, rec.LastError)
		return nil
	}
	tw := cli.Table(stdio.Stdout)
	fmt.Fprintln(tw, "STARTED\tFROM\tTO\tSLOT\tOUTCOME\tTOOK\tERROR")
	for _, a := range all {
		outcome, took := a.Outcome, "-"
		if outcome == updated.OutcomeInProgress {
			outcome = "in progress (" + string(rec.State) + ")"
		}
		if !a.Finished.IsZero() {
			took = a.Finished.Sub(a.Started).Round(time.Second).String()
		}
		errText := "-"
		if a.ErrorCode != 0 || a.Error != "" {
			errText = fmt.Sprintf("%d: %s", a.ErrorCode, trunc(a.Error, 100))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Started.UTC().Format(time.RFC3339), orDash(a.FromVersion),
			orDash(a.ToVersion), orDash(a.TargetSlot), outcome, took, errText)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rec.BadVersions) > 0 {
		fmt.Fprintf(stdio.Stdout, "\nversions that failed here and are not installed again (updatectl reset clears this): %v\n", rec.BadVersions)
	}
	printLastError(stdio.Stdout, rec.LastError)
	return nil
}

// printLastError prints the last failure the agent reported (a failed check has no attempt, so
// this is where "the server knows no group" shows).
func printLastError(w io.Writer, f *updated.Failure) {
	if f != nil {
		fmt.Fprintf(w, "\nlast error: %s\n", describeFailure(f))
	}
}

func describeFailure(f *updated.Failure) string {
	return fmt.Sprintf("%s (error %d in %s)", f.Message, f.Code, f.Step)
}

// lastFailure reads the last reported failure from updated's state file in dir; nil when there
// is none or the file cannot be read (status and check work without it).
func lastFailure(dir string) *updated.Failure {
	rec, err := updated.LoadRecord(filepath.Join(dir, updated.StateFile))
	if err != nil {
		return nil
	}
	return rec.LastError
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
