package releasectl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/cli"
)

func (c *cmd) gateCommands() []cli.Command {
	return []cli.Command{
		{Name: "set", Summary: "set the promotion gate of a channel", Run: c.gateSet},
		{Name: "delete", Summary: "remove the promotion gate of a channel", Run: c.gateDelete},
		{Name: "check", Summary: "evaluate a channel's gate for a version without promoting", Run: c.gateCheck},
	}
}

// limitString shows a maximum, -1 being "any".
func limitString(n int64) string {
	if n < 0 {
		return "any"
	}
	return fmt.Sprint(n)
}

func (c *cmd) gates(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl gates", "", "List the promotion gates: per channel what a version must show on the channel it comes from.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Gate, error) {
		return cl.Gates(ctx, app)
	}, func(w io.Writer, gs []admin.Gate) error {
		tw := cli.Table(w)
		fmt.Fprintln(tw, "CHANNEL\tMIN SOAK\tMIN COMMITTED\tMAX FAILURES\tMAX ROLLBACKS\tAUTO\tSET")
		for _, g := range gs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%t\t%s\n", g.Channel, time.Duration(g.MinSoak), g.MinCommitted,
				limitString(g.MaxFailures), limitString(g.MaxRollbacks), g.Auto, g.Updated.Format("2006-01-02 15:04"))
		}
		return tw.Flush()
	})
}

func (c *cmd) gateSet(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl gate set", "--channel stable [--min-soak 24h] [--min-committed N] [--max-failures N] [--max-rollbacks N]",
		`Set the promotion gate of a channel: 'releasectl promote --to CHANNEL' is refused until the
version has been on the channel it comes from for --min-soak, at least --min-committed hosts of
that channel's groups run it after their reboot, and at most --max-failures hosts failed it and
--max-rollbacks rolled it back (-1 = any number). The flags replace the whole gate.`)
	k := c.connFlags(fs, true)
	channel := fs.String("channel", "", "channel promoted into")
	soak := fs.Duration("min-soak", 0, "time the version must have spent on the source channel")
	committed := fs.Int64("min-committed", 0, "hosts of the source channel that must run it")
	failures := fs.Int64("max-failures", 0, "hosts that may have failed it (-1 = any)")
	rollbacks := fs.Int64("max-rollbacks", 0, "hosts that may have rolled it back (-1 = any)")
	auto := fs.Bool("auto", false, "let the server promote each newer version of the channel before this one by itself once the gate passes")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *channel == "" {
		return cli.Usagef("--channel is required")
	}
	g := admin.Gate{Channel: *channel, MinSoak: admin.Duration(*soak), MinCommitted: *committed, MaxFailures: *failures, MaxRollbacks: *rollbacks, Auto: *auto}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Gate, error) {
		return cl.SetGate(ctx, app, g)
	}, func(w io.Writer, g admin.Gate) error {
		fmt.Fprintf(w, "gate of %s: soak %s, at least %d committed, at most %s failed and %s rolled back\n",
			g.Channel, time.Duration(g.MinSoak), g.MinCommitted, limitString(g.MaxFailures), limitString(g.MaxRollbacks))
		if g.Auto {
			fmt.Fprintf(w, "the server promotes into %s by itself when the gate passes\n", g.Channel)
		}
		return nil
	})
}

func (c *cmd) gateDelete(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl gate delete", "--channel stable", "Remove the promotion gate of a channel: promotions into it are no longer checked.")
	k := c.connFlags(fs, false)
	channel := fs.String("channel", "", "channel promoted into")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *channel == "" {
		return cli.Usagef("--channel is required")
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (struct{}, error) {
		return struct{}{}, cl.DeleteGate(ctx, app, *channel)
	}, func(w io.Writer, _ struct{}) error {
		_, err := fmt.Fprintf(w, "removed the gate of %s\n", *channel)
		return err
	})
}

func (c *cmd) gateCheck(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl gate check", "--version V --from beta --to stable", "Evaluate the gate of --to for promoting V from --from, without promoting.")
	k := c.connFlags(fs, true)
	version := fs.String("version", "", "version to promote")
	from := fs.String("from", "", "channel that carries it now")
	to := fs.String("to", "", "channel to point at it")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *version == "" || *from == "" || *to == "" {
		return cli.Usagef("--version, --from and --to are required")
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.GateCheck, error) {
		return cl.CheckGate(ctx, app, admin.Promote{Version: *version, From: *from, To: *to})
	}, func(w io.Writer, cs []admin.GateCheck) error {
		if len(cs) == 0 {
			_, err := fmt.Fprintf(w, "%s has no promotion gate\n", *to)
			return err
		}
		return printGateChecks(w, cs)
	})
}

// printGateChecks writes a gate's checks as a table.
func printGateChecks(w io.Writer, cs []admin.GateCheck) error {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "CHECK\tWANTED\tHAS\tPASSED\t")
	for _, c := range cs {
		wanted, has := fmt.Sprint(c.Wanted), fmt.Sprint(c.Has)
		if c.Unit == "seconds" {
			wanted, has = (time.Duration(c.Wanted) * time.Second).String(), (time.Duration(c.Has) * time.Second).String()
		}
		verdict := "yes"
		if !c.Passed {
			verdict = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, wanted, has, verdict, c.Text)
	}
	return tw.Flush()
}

// gateRefusal explains a promotion the server's gate refused: each check, and what to do.
func gateRefusal(err error, to string) error {
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || len(ae.Gates) == 0 {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "promotion refused: the gate of %s does not pass\n", to)
	printGateChecks(&b, ae.Gates)
	b.WriteString("wait until it passes (releasectl gate check), or override with --force --reason TEXT (recorded in the audit log)")
	return errors.New(b.String())
}
