package releasectl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/cli"
)

func policyString(p admin.Policy) string {
	var parts []string
	switch {
	case p.Enabled:
		parts = append(parts, "enabled")
	case p.HaltedReason != "":
		parts = append(parts, "HALTED")
	default:
		parts = append(parts, "PAUSED")
	}
	if p.MaxUpdates > 0 {
		parts = append(parts, fmt.Sprintf("max %d per %s", p.MaxUpdates, time.Duration(p.Period)))
	} else {
		parts = append(parts, "no cap")
	}
	if p.UpdateTimeout > 0 {
		parts = append(parts, "timeout "+time.Duration(p.UpdateTimeout).String())
	}
	if p.HaltOnFailures > 0 {
		parts = append(parts, fmt.Sprintf("halt at %d failed", p.HaltOnFailures))
	}
	if p.DisablePayloadBackoff {
		parts = append(parts, "no payload backoff")
	}
	if p.Waves != "" {
		parts = append(parts, "waves "+p.Waves)
	}
	if p.OfficeHours != "" {
		parts = append(parts, "office hours "+p.OfficeHours)
	}
	if p.RequireEnrollment {
		s := "enrolled hosts only"
		if p.Anonymous == "flatcar" {
			s += " (+ Flatcar anonymously)"
		}
		parts = append(parts, s)
	}
	if p.GrantStartTimeout > 0 {
		parts = append(parts, "grant start timeout "+time.Duration(p.GrantStartTimeout).String())
	}
	return strings.Join(parts, ", ")
}

// printHalted writes, below a table of groups, why each halted group was halted.
func printHalted(w io.Writer, gs []admin.Group) {
	first := true
	for _, g := range gs {
		if g.Policy.Enabled || g.Policy.HaltedReason == "" {
			continue
		}
		if first {
			fmt.Fprintln(w, "\nhalted groups (resume with 'releasectl group resume GROUP' once fixed):")
			first = false
		}
		fmt.Fprintf(w, "  %s since %s: %s\n", g.Name, g.Policy.HaltedAt.Format(time.RFC3339), g.Policy.HaltedReason)
	}
}

func (c *cmd) groups(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl groups", "", "List groups, the channel each follows and its rollout policy.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Group, error) {
		return cl.Groups(ctx, app)
	}, func(w io.Writer, gs []admin.Group) error {
		tw := cli.Table(w)
		fmt.Fprintln(tw, "NAME\tID\tCHANNEL\tPOLICY")
		for _, g := range gs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.ID, g.Channel, policyString(g.Policy))
		}
		err := tw.Flush()
		printHalted(w, gs)
		return err
	})
}

// policyFlags are the flags of group create/update.
type policyFlags struct {
	channel *string
	enabled *bool
	max     *int64
	period  *time.Duration
	timeout *time.Duration
	halt    *int64
	backoff *bool
	waves   *string
	office  *string
	// enrollment and grant expiry (issue 16)
	requireEnroll *bool
	anonymous     *string
	grantStart    *time.Duration
}

func addPolicyFlags(fs *flag.FlagSet) *policyFlags {
	return &policyFlags{
		channel: fs.String("channel", "", "channel the group follows (alpha, beta or stable)"),
		enabled: fs.Bool("enabled", true, "offer updates (false = paused)"),
		max:     fs.Int64("max-updates", 0, "hosts granted an update per period (0 = no cap)"),
		period:  fs.Duration("period", time.Hour, "period of --max-updates"),
		timeout: fs.Duration("update-timeout", time.Hour, "free a granted slot when the host did not report installed in this time (0 = never)"),
		halt: fs.Int64("halt-on-failures", 0,
			"pause the group when this many distinct hosts fail or roll back the version it offers (0 = off)"),
		backoff: fs.Bool("disable-payload-backoff", false,
			"tell update_engine to retry a failed download at its next check instead of backing off for days"),
		waves: fs.String("waves", "",
			`roll each new version out in waves: SHARE%:SOAK,… ending in 100%, e.g. "1%:1h,10%:2h,50%:4h,100%" (the same hosts first every time; the next wave opens after the soak while the group is healthy); "none" = all hosts at once`),
		office: fs.String("office-hours", "",
			`offer new updates only within these windows: "[DAYS] HH:MM-HH:MM [ZONE]" separated by ";", e.g. "Mon-Fri 09:00-17:00 Europe/Berlin" (hosts holding a grant keep it); "none" = any time`),
		requireEnroll: fs.Bool("require-enrollment", false,
			"offer updates, spend the budget and count failures only for hosts that enrolled (releasectl enroll-token create)"),
		anonymous: fs.String("anonymous", "none",
			"with --require-enrollment: which clients that cannot enroll are still served as before: none, or flatcar (update_engine; anyone can claim to be one)"),
		grantStart: fs.Duration("grant-start-timeout", 0,
			"free a grant's slot when its host did not start downloading (13/1) within this time, e.g. 10m (0 = off)"),
	}
}

// check refuses flag values the server would refuse too, before anything is sent.
func (pf *policyFlags) check() error {
	if *pf.halt < 0 {
		return cli.Usagef("--halt-on-failures %d: give 0 (off) or a number of hosts", *pf.halt)
	}
	if *pf.max < 0 {
		return cli.Usagef("--max-updates %d: give 0 (no cap) or a number of hosts", *pf.max)
	}
	if *pf.anonymous != "none" && *pf.anonymous != "flatcar" {
		return cli.Usagef("--anonymous %q: give none or flatcar", *pf.anonymous)
	}
	if *pf.grantStart < 0 {
		return cli.Usagef("--grant-start-timeout %s: give 0 (off) or a duration such as 10m", *pf.grantStart)
	}
	return nil
}

// given returns the names of the flags set on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// ifGiven is v when the flag name was set on the command line, else nil (no change).
func ifGiven[T any](set map[string]bool, name string, v *T) *T {
	if !set[name] {
		return nil
	}
	return v
}

func (c *cmd) groupCreate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl group create", "--name N --channel C [policy flags]",
		"Create a group. Hosts join it by setting GROUP=<name or id> in update.conf.")
	k := c.connFlags(fs, true)
	name := fs.String("name", "", "group name")
	pf := addPolicyFlags(fs)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *name == "" || *pf.channel == "" {
		return cli.Usagef("--name and --channel are required")
	}
	if err := pf.check(); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Group, error) {
		return cl.CreateGroup(ctx, app, admin.Group{Name: *name, Channel: *pf.channel, Policy: admin.Policy{
			Enabled: *pf.enabled, MaxUpdates: *pf.max, Period: admin.Duration(*pf.period), UpdateTimeout: admin.Duration(*pf.timeout),
			HaltOnFailures: *pf.halt, DisablePayloadBackoff: *pf.backoff, Waves: *pf.waves, OfficeHours: *pf.office,
			RequireEnrollment: *pf.requireEnroll, Anonymous: *pf.anonymous, GrantStartTimeout: admin.Duration(*pf.grantStart),
		}})
	}, printGroup)
}

func printGroup(w io.Writer, g admin.Group) error {
	_, err := fmt.Fprintf(w, "group %s (%s) follows %s: %s\n", g.Name, g.ID, g.Channel, policyString(g.Policy))
	printHalted(w, []admin.Group{g})
	return err
}

func (c *cmd) groupUpdate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl group update", "GROUP [--channel C] [--enabled=false] [--max-updates N] [--period D] [--update-timeout D] [--halt-on-failures N] [--disable-payload-backoff] [--waves SPEC|none] [--office-hours SPEC|none] [--require-enrollment] [--anonymous none|flatcar] [--grant-start-timeout D]",
		"Change a group (by name or id). Only the flags given change. --enabled=true resumes a halted group and clears its reason.")
	k := c.connFlags(fs, true)
	pf := addPolicyFlags(fs)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "a GROUP name or id"); err != nil {
		return err
	}
	set := given(fs)
	ch := admin.GroupChange{
		Channel:               ifGiven(set, "channel", pf.channel),
		Enabled:               ifGiven(set, "enabled", pf.enabled),
		MaxUpdates:            ifGiven(set, "max-updates", pf.max),
		Period:                (*admin.Duration)(ifGiven(set, "period", pf.period)),
		UpdateTimeout:         (*admin.Duration)(ifGiven(set, "update-timeout", pf.timeout)),
		HaltOnFailures:        ifGiven(set, "halt-on-failures", pf.halt),
		DisablePayloadBackoff: ifGiven(set, "disable-payload-backoff", pf.backoff),
		Waves:                 ifGiven(set, "waves", pf.waves),
		OfficeHours:           ifGiven(set, "office-hours", pf.office),
		RequireEnrollment:     ifGiven(set, "require-enrollment", pf.requireEnroll),
		Anonymous:             ifGiven(set, "anonymous", pf.anonymous),
		GrantStartTimeout:     (*admin.Duration)(ifGiven(set, "grant-start-timeout", pf.grantStart)),
	}
	if ch == (admin.GroupChange{}) {
		return cli.Usagef("nothing to change: give at least one of --channel, --enabled, --max-updates, --period, --update-timeout, --halt-on-failures, --disable-payload-backoff, --waves, --office-hours, --require-enrollment, --anonymous, --grant-start-timeout")
	}
	if err := pf.check(); err != nil {
		return err
	}
	return c.changeGroup(ctx, stdio, k, pos[0], ch)
}

func (c *cmd) changeGroup(ctx context.Context, stdio cli.IO, k *conn, group string, ch admin.GroupChange) error {
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Group, error) {
		return cl.UpdateGroup(ctx, app, group, ch)
	}, printGroup)
}

func (c *cmd) groupPause(ctx context.Context, stdio cli.IO, args []string) error {
	return c.groupEnable(ctx, stdio, args, false)
}

func (c *cmd) groupResume(ctx context.Context, stdio cli.IO, args []string) error {
	return c.groupEnable(ctx, stdio, args, true)
}

func (c *cmd) groupEnable(ctx context.Context, stdio cli.IO, args []string, on bool) error {
	verb := map[bool]string{false: "pause", true: "resume"}[on]
	fs := stdio.FlagSet("releasectl group "+verb, "GROUP", map[bool]string{
		false: "Stop offering updates to a group (hosts get noupdate); hosts mid-update finish.",
		true:  "Offer updates to a paused or halted group again (clears the halted reason; failures are counted anew).",
	}[on])
	k := c.connFlags(fs, true)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "a GROUP name or id"); err != nil {
		return err
	}
	return c.changeGroup(ctx, stdio, k, pos[0], admin.GroupChange{Enabled: &on})
}

func (c *cmd) groupShow(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl group show", "GROUP",
		"Show a group (by name or id): its policy, its hosts by version and state, and where its rollout in waves stands.")
	k := c.connFlags(fs, true)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "a GROUP name or id"); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.GroupStatus, error) {
		st, err := cl.Status(ctx, app)
		if err != nil {
			return admin.GroupStatus{}, err
		}
		for _, byName := range []bool{false, true} {
			for _, g := range st.Groups {
				if !byName && g.Group.ID == pos[0] || byName && g.Group.Name == pos[0] {
					return g, nil
				}
			}
		}
		return admin.GroupStatus{}, fmt.Errorf("no group %q in app %s: see 'releasectl groups'", pos[0], app)
	}, printGroupStatus)
}

func printGroupStatus(w io.Writer, g admin.GroupStatus) error {
	if err := printGroup(w, g.Group); err != nil {
		return err
	}
	fmt.Fprintf(w, "hosts: %d\n", g.Instances)
	for _, c := range g.Counts {
		fmt.Fprintf(w, "  %s %s: %d\n", c.Version, c.State, c.N)
	}
	if r := g.Rollout; r != nil {
		switch {
		case r.Waves > 0 && r.Version != "":
			fmt.Fprintf(w, "rollout of %s: wave %d of %d open (%v%% of hosts)", r.Version, r.Wave+1, r.Waves, r.SharePercent)
			if !r.Opened.IsZero() {
				fmt.Fprintf(w, " since %s", r.Opened.Format(time.RFC3339))
			}
			if !r.NextAt.IsZero() {
				fmt.Fprintf(w, "; next wave at %s", r.NextAt.Format(time.RFC3339))
			}
			if r.Held != "" {
				fmt.Fprintf(w, " (%s)", r.Held)
			}
			fmt.Fprintln(w)
		case r.Waves > 0:
			fmt.Fprintln(w, "rollout: the channel carries no version")
		}
		if g.Group.Policy.OfficeHours != "" {
			fmt.Fprintf(w, "office hours %s: %s now\n", g.Group.Policy.OfficeHours, map[bool]string{true: "open", false: "closed"}[r.OfficeHoursOpen])
		}
	}
	return nil
}
