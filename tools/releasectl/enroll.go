package releasectl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/cli"
)

func (c *cmd) enrollTokenCommands() []cli.Command {
	return []cli.Command{
		{Name: "create", Summary: "create an enrollment token (its secret is shown once)", Run: c.enrollTokenCreate},
		{Name: "list", Summary: "list enrollment tokens, their uses and expiry", Run: c.enrollTokenList},
		{Name: "revoke", Summary: "revoke an enrollment token (enrolled hosts keep their credentials)", Run: c.enrollTokenRevoke},
	}
}

func (c *cmd) enrollTokenCreate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl enroll-token create", "[--group G] [--expires 24h] [--uses N] [--name TEXT]",
		`Create an enrollment token. Put it on hosts as ENROLLMENT_TOKEN=<secret> in
/etc/twinslot/update.conf (or run 'updatectl enroll --token <secret>'): each host exchanges it
once for a credential bound to its machine id, which groups with --require-enrollment ask for.
The secret is printed once; the server keeps only its hash.`)
	k := c.connFlags(fs, true)
	group := fs.String("group", "", "the credentials count only in this group (name or id); empty: any group of the app")
	expires := fs.Duration("expires", 24*time.Hour, "the token enrolls no host after this time (0 = never expires)")
	uses := fs.Int64("uses", 0, "how many hosts may enroll with it (0 = no limit)")
	name := fs.String("name", "", "a note saying what the token is for")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *expires < 0 || *uses < 0 {
		return cli.Usagef("--expires and --uses must not be negative (0 = never expires / no limit)")
	}
	req := admin.EnrollTokenCreate{Name: *name, Group: *group, MaxUses: *uses, ExpiresIn: admin.Duration(*expires)}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.EnrollTokenCreated, error) {
		return cl.CreateEnrollToken(ctx, app, req)
	}, func(w io.Writer, t admin.EnrollTokenCreated) error {
		fmt.Fprintf(w, "enrollment token %s (%s); the secret is shown only now:\n%s\n", t.ID, tokenLimits(t.EnrollToken), t.Secret)
		return nil
	})
}

// tokenLimits says where, how often and until when a token enrolls hosts.
func tokenLimits(t admin.EnrollToken) string {
	s := "any group"
	if t.GroupID != "" {
		s = "group " + t.GroupID
	}
	if t.MaxUses > 0 {
		s += fmt.Sprintf(", %d of %d uses", t.Uses, t.MaxUses)
	} else {
		s += fmt.Sprintf(", %d uses", t.Uses)
	}
	switch {
	case !t.Revoked.IsZero():
		s += ", revoked " + t.Revoked.Format(time.RFC3339)
	case !t.Expires.IsZero():
		s += ", expires " + t.Expires.Format(time.RFC3339)
	default:
		s += ", never expires"
	}
	return s
}

func (c *cmd) enrollTokenList(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl enroll-token list", "", "List the app's enrollment tokens (never their secrets).")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.EnrollToken, error) {
		return cl.EnrollTokens(ctx, app)
	}, func(w io.Writer, ts []admin.EnrollToken) error {
		tw := cli.Table(w)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED\tLIMITS")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Created.Format("2006-01-02 15:04"), tokenLimits(t))
		}
		return tw.Flush()
	})
}

func (c *cmd) enrollTokenRevoke(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl enroll-token revoke", "ID", "Revoke an enrollment token: no more hosts enroll with it. Hosts that enrolled keep their credentials.")
	k := c.connFlags(fs, true)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "the token ID (releasectl enroll-token list)"); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.EnrollToken, error) {
		return cl.RevokeEnrollToken(ctx, app, pos[0])
	}, func(w io.Writer, t admin.EnrollToken) error {
		_, err := fmt.Fprintf(w, "enrollment token %s revoked (%s)\n", t.ID, tokenLimits(t))
		return err
	})
}

func (c *cmd) unenroll(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl unenroll", "MACHINE-ID", `Delete a host's credential (a decommissioned or compromised host): groups with
--require-enrollment stop trusting it at once (other omahad replicas within --cache-poll), until
it enrolls again with a valid token.`)
	k := c.connFlags(fs, true)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "the host's MACHINE-ID"); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.HostCredential, error) {
		return cl.UnenrollHost(ctx, app, pos[0])
	}, func(w io.Writer, h admin.HostCredential) error {
		_, err := fmt.Fprintf(w, "host %s unenrolled (enrolled %s with token %s)\n", h.MachineID, h.Enrolled.Format(time.RFC3339), h.TokenID)
		return err
	})
}
