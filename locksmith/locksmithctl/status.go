package locksmithctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/tools/cli"
)

// StatusJSON is the output of status --json.
type StatusJSON struct {
	Group           string `json:"group"`
	Max             int    `json:"max"`
	Available       int    `json:"available"`
	LeaseTTLSeconds int64  `json:"lease_ttl_seconds"`
	StalePolicy     string `json:"stale_policy"`
	// StaleAfterSeconds is the --stale-after in force (0: unseen holders are not flagged).
	StaleAfterSeconds int64        `json:"stale_after_seconds"`
	Holders           []HolderJSON `json:"holders"`
}

// HolderJSON is one holder in StatusJSON.
type HolderJSON struct {
	Slot        int       `json:"slot"`
	ID          string    `json:"id"`
	BootID      string    `json:"boot_id,omitempty"`
	Hostname    string    `json:"hostname,omitempty"`
	FromVersion string    `json:"from_version,omitempty"`
	ToVersion   string    `json:"to_version,omitempty"`
	AcquiredAt  time.Time `json:"acquired_at"`
	AgeSeconds  int64     `json:"age_seconds"`
	// SeenAt is the last time the holder wrote its slot (AcquiredAt if never since).
	SeenAt        time.Time `json:"seen_at"`
	UnseenSeconds int64     `json:"unseen_seconds"`
	State         string    `json:"state"`
	Note          string    `json:"note,omitempty"`
	// Stale: older than the group's lease TTL, or unseen for longer than --stale-after.
	Stale bool  `json:"stale"`
	Lease int64 `json:"lease,omitempty"`
	// UnlockCommand frees the slot, set for a stale holder. Nothing runs it on its own.
	UnlockCommand string `json:"unlock_command,omitempty"`
}

func (g *globals) status(ctx context.Context, stdio cli.IO, long bool, staleAfter time.Duration) error {
	return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
		st, err := s.State(ctx, g.group)
		if err != nil {
			return err
		}
		out := statusOf(st, g.now(), staleAfter, g.unlockCommand)
		if g.asJSON {
			return cli.PrintJSON(stdio.Stdout, out)
		}
		if long {
			err = printLong(stdio.Stdout, st, out)
		} else {
			err = printCoreOS(stdio.Stdout, out)
		}
		if err != nil {
			return err
		}
		printStale(stdio.Stderr, st, out, staleAfter)
		return nil
	})
}

// printCoreOS prints the status exactly as CoreOS locksmithctl does, so scripts that read it keep
// working: Available, Max, and the holders' machine ids under a MACHINE ID header.
func printCoreOS(w io.Writer, out StatusJSON) error {
	fmt.Fprintf(w, "Available: %d\nMax: %d\n", out.Available, out.Max)
	if len(out.Holders) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "MACHINE ID")
	ids := make([]string, 0, len(out.Holders))
	for _, h := range out.Holders {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids) // CoreOS keeps its holders sorted
	for _, id := range ids {
		fmt.Fprintln(w, id)
	}
	return nil
}

// statusOf is the status of st at now; unlock gives the command that frees a holder's slot.
func statusOf(st locksmith.State, now time.Time, staleAfter time.Duration, unlock func(id string) string) StatusJSON {
	out := StatusJSON{Group: st.Group, Max: st.Config.Max, Available: st.Available(), LeaseTTLSeconds: st.Config.LeaseTTLSeconds,
		StalePolicy: string(st.Config.Stale), StaleAfterSeconds: int64(staleAfter / time.Second), Holders: []HolderJSON{}}
	for _, sl := range st.Slots {
		h := sl.Holder
		state := string(h.State)
		if state == "" {
			state = "locked"
		}
		hj := HolderJSON{Slot: sl.Index, ID: h.ID, BootID: h.BootID, Hostname: h.Hostname,
			FromVersion: h.FromVersion, ToVersion: h.ToVersion, AcquiredAt: h.AcquiredAt,
			AgeSeconds: int64(now.Sub(h.AcquiredAt) / time.Second), SeenAt: sl.LastSeen(),
			UnseenSeconds: int64(now.Sub(sl.LastSeen()) / time.Second), State: state, Note: h.Note,
			Stale: st.Stale(sl, now) || st.Unseen(sl, now, staleAfter), Lease: sl.Lease}
		if hj.Stale {
			hj.UnlockCommand = unlock(h.ID)
		}
		out.Holders = append(out.Holders, hj)
	}
	return out
}

// printLong prints the group, its policy and a table of the holders.
func printLong(w io.Writer, st locksmith.State, out StatusJSON) error {
	fmt.Fprintf(w, "Group: %s\nAvailable: %d\nMax: %d\n", out.Group, out.Available, out.Max)
	if out.LeaseTTLSeconds > 0 {
		fmt.Fprintf(w, "Lease-TTL: %s (stale policy %s)\n", st.Config.LeaseTTL(), out.StalePolicy)
	}
	if len(out.Holders) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := cli.Table(w)
	fmt.Fprintln(tw, "SLOT\tMACHINE\tHOST\tSTATE\tAGE\tLAST SEEN\tVERSIONS\tNOTE")
	for _, h := range out.Holders {
		state := h.State
		if h.Stale {
			state += " (STALE)"
		}
		versions := ""
		if h.FromVersion != "" || h.ToVersion != "" {
			versions = h.FromVersion + " -> " + h.ToVersion
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", h.Slot, h.ID, h.Hostname, state,
			(time.Duration(h.AgeSeconds) * time.Second).String(), (time.Duration(h.UnseenSeconds) * time.Second).String(), versions, h.Note)
	}
	return tw.Flush()
}

// printStale tells, on stderr, which holders look gone and the commands that free their slots.
func printStale(w io.Writer, st locksmith.State, out StatusJSON, staleAfter time.Duration) {
	var stale []HolderJSON
	for _, h := range out.Holders {
		if h.Stale {
			stale = append(stale, h)
		}
	}
	if len(stale) == 0 {
		return
	}
	why := fmt.Sprintf("not seen for longer than %s (--stale-after)", staleAfter)
	if out.LeaseTTLSeconds > 0 {
		why += fmt.Sprintf(" or older than the lease TTL %s", st.Config.LeaseTTL())
	}
	fmt.Fprintf(w, "%d holder(s) %s: the host may be gone. Nothing frees a slot on its own", len(stale), why)
	if out.StalePolicy == string(locksmith.StaleExpire) {
		fmt.Fprint(w, " except etcd's lease expiry (stale policy expire)")
	}
	fmt.Fprintln(w, "; if the host is gone, free its slot with:")
	for _, h := range stale {
		fmt.Fprintf(w, "  %s\n", h.UnlockCommand)
	}
}

// unlockCommand is the exact command that frees id's slot in this group at these endpoints.
func (g *globals) unlockCommand(id string) string {
	return fmt.Sprintf("locksmithctl -endpoint %s -group %s unlock %s", g.etcd.Endpoints.String(), shellQuote(g.group), shellQuote(id))
}

// shellQuote quotes s for a POSIX shell when it has anything but safe characters.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:@%+=,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
