package releasectl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/cli"
)

func (c *cmd) instances(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl instances", "[--group G] [--version V] [--state S] [--limit N]",
		"List hosts ordered by machine id. States: idle onhold granted downloading downloaded installed complete error rolledback.")
	k := c.connFlags(fs, true)
	group := fs.String("group", "", "only this group (name or id)")
	version := fs.String("version", "", "only hosts running this version")
	state := fs.String("state", "", "only hosts in this state")
	after := fs.String("after", "", "continue after this machine id")
	limit := fs.Int("limit", 1000, "at most this many hosts")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Instance, error) {
		return cl.Instances(ctx, app, admin.InstanceQuery{Group: *group, Version: *version, State: *state, After: *after, Limit: *limit})
	}, printInstances)
}

func printInstances(w io.Writer, ins []admin.Instance) error {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "MACHINE\tALIAS\tGROUP\tVERSION\tSTATE\tLAST CHECK\tGRANTED\tERROR")
	for _, in := range ins {
		errs := ""
		if in.LastError != 0 {
			errs = omaha.ErrorCode(uint32(in.LastError)).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.MachineID, in.Alias, in.Group, in.Version, in.State,
			in.LastCheck.Format("2006-01-02 15:04:05"), in.GrantedVersion, errs)
	}
	return tw.Flush()
}

func (c *cmd) events(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl events", "[--machine ID | --failures] [--limit N]", "List events, newest first.")
	k := c.connFlags(fs, true)
	machine := fs.String("machine", "", "events of this host")
	failures := fs.Bool("failures", false, "only failures and rollbacks")
	limit := fs.Int("limit", 100, "at most this many events")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Event, error) {
		if *machine != "" {
			return cl.MachineEvents(ctx, app, *machine, *limit)
		}
		return cl.Events(ctx, app, *failures, *limit)
	}, func(w io.Writer, evs []admin.Event) error {
		tw := cli.Table(w)
		fmt.Fprintln(tw, "TIME\tMACHINE\tEVENT\tRUNNING\tTARGET")
		for _, e := range evs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.Format("2006-01-02 15:04:05"), e.MachineID, e.Description, e.Version, e.TargetVersion)
		}
		return tw.Flush()
	})
}

func (c *cmd) status(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl status", "", "Per channel the version it carries; per group its hosts by version and state, and failures.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Status, error) {
		return cl.Status(ctx, app)
	}, printStatus)
}

func printStatus(w io.Writer, st admin.Status) error {
	fmt.Fprintf(w, "app %s (%s)\n\n", st.App.Name, st.App.ID)
	tw := cli.Table(w)
	fmt.Fprintln(tw, "CHANNEL\tVERSIONS")
	for _, ch := range st.Channels {
		var vs []string
		for _, b := range cli.SortedKeys(ch.Packages) {
			vs = append(vs, ch.Packages[b].Version+" ("+b+")")
		}
		if len(vs) == 0 {
			vs = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\n", ch.Name, strings.Join(vs, ", "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = cli.Table(w)
	fmt.Fprintln(tw, "GROUP\tCHANNEL\tPOLICY\tHOSTS\tVERSION\tSTATE\tCOUNT")
	for _, g := range st.Groups {
		first := fmt.Sprintf("%s\t%s\t%s\t%d", g.Group.Name, g.Group.Channel, policyString(g.Group.Policy), g.Instances)
		if len(g.Counts) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\n", first)
		}
		counts := slices.Clone(g.Counts)
		for i, cnt := range counts {
			if i > 0 {
				first = "\t\t\t"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", first, cnt.Version, cnt.State, cnt.N)
		}
	}
	tw.Flush()
	var gs []admin.Group
	for _, g := range st.Groups {
		gs = append(gs, g.Group)
	}
	printHalted(w, gs)
	var fails []string
	for _, g := range st.Groups {
		for _, f := range g.Failures {
			fails = append(fails, fmt.Sprintf("  %s → %s: %d failed, %d rolled back", g.Group.Name, f.TargetVersion, f.Failed, f.RolledBack))
		}
	}
	if len(fails) > 0 {
		fmt.Fprintf(w, "\nfailures by group and target version:\n%s\n", strings.Join(fails, "\n"))
	}
	return nil
}
