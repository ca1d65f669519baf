package locksmithctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/tools/cli"
)

// StatusJSON is the output of status -o json.
type StatusJSON struct {
	Group           string       `json:"group"`
	Max             int          `json:"max"`
	Available       int          `json:"available"`
	LeaseTTLSeconds int64        `json:"lease_ttl_seconds"`
	StalePolicy     string       `json:"stale_policy"`
	Holders         []HolderJSON `json:"holders"`
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
	State       string    `json:"state"`
	Note        string    `json:"note,omitempty"`
	Stale       bool      `json:"stale"`
	Lease       int64     `json:"lease,omitempty"`
}

func (g *globals) status(ctx context.Context, w io.Writer, asJSON bool) error {
	return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
		st, err := s.State(ctx, g.group)
		if err != nil {
			return err
		}
		now := g.now()
		out := StatusJSON{Group: st.Group, Max: st.Config.Max, Available: st.Available(),
			LeaseTTLSeconds: st.Config.LeaseTTLSeconds, StalePolicy: string(st.Config.Stale), Holders: []HolderJSON{}}
		for _, sl := range st.Slots {
			h := sl.Holder
			state := string(h.State)
			if state == "" {
				state = "locked"
			}
			out.Holders = append(out.Holders, HolderJSON{Slot: sl.Index, ID: h.ID, BootID: h.BootID, Hostname: h.Hostname,
				FromVersion: h.FromVersion, ToVersion: h.ToVersion, AcquiredAt: h.AcquiredAt,
				AgeSeconds: int64(now.Sub(h.AcquiredAt) / time.Second), State: state, Note: h.Note,
				Stale: st.Stale(sl, now), Lease: sl.Lease})
		}
		if asJSON {
			return cli.PrintJSON(w, out)
		}
		fmt.Fprintf(w, "Group: %s\nAvailable: %d\nMax: %d\n", out.Group, out.Available, out.Max)
		if out.LeaseTTLSeconds > 0 {
			fmt.Fprintf(w, "Lease-TTL: %s (stale policy %s)\n", st.Config.LeaseTTL(), out.StalePolicy)
		}
		if len(out.Holders) == 0 {
			return nil
		}
		fmt.Fprintln(w)
		tw := cli.Table(w)
		fmt.Fprintln(tw, "SLOT\tMACHINE\tHOST\tSTATE\tAGE\tVERSIONS\tNOTE")
		for _, h := range out.Holders {
			state := h.State
			if h.Stale {
				state += " (STALE)"
			}
			versions := ""
			if h.FromVersion != "" || h.ToVersion != "" {
				versions = h.FromVersion + " -> " + h.ToVersion
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Slot, h.ID, h.Hostname, state,
				(time.Duration(h.AgeSeconds) * time.Second).String(), versions, h.Note)
		}
		return tw.Flush()
	})
}
