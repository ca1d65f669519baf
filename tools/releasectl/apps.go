package releasectl

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

func readTrust(path string) ([]byte, error) {
	if path == "" {
		return nil, cli.Usagef("--trust FILE is required (make one with 'payload trust init')")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := payload.ParseTrustRoot(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

func (c *cmd) appCreate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl app create", "--id ID --name N [--trust trust.json]",
		`Create an app with channels alpha, beta and stable, each with a default group of the same name.
Without --trust the app can hold only Flatcar payloads until 'app set-trust' gives it one.`)
	k := c.connFlags(fs, true)
	id := fs.String("id", payload.DefaultAppID, "app id (a UUID)")
	name := fs.String("name", "", "app name")
	trust := fs.String("trust", "", "payload trust root (JSON from 'payload trust init'); omit for Flatcar payloads only")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return cli.Usagef("--name is required")
	}
	var b []byte
	if *trust != "" { // no trust root: an app for Flatcar payloads only
		var err error
		if b, err = readTrust(*trust); err != nil {
			return err
		}
	}
	k.app = *id
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.App, error) {
		return cl.CreateApp(ctx, admin.App{ID: app, Name: *name, Trust: b})
	}, func(w io.Writer, a admin.App) error {
		_, err := fmt.Fprintf(w, "created app %s (%s) with channels alpha, beta, stable\n", a.Name, a.ID)
		return err
	})
}

func (c *cmd) appSetTrust(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl app set-trust", "[--app ID] --trust trust.json",
		"Replace an app's payload trust root; later uploads are verified against the new one.")
	k := c.connFlags(fs, true)
	trust := fs.String("trust", "", "payload trust root (JSON)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	b, err := readTrust(*trust)
	if err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.App, error) {
		return cl.SetTrust(ctx, app, b)
	}, func(w io.Writer, a admin.App) error {
		_, err := fmt.Fprintf(w, "replaced the trust root of %s\n", a.ID)
		return err
	})
}

func (c *cmd) appList(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl app list", "", "List apps.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, _ string) ([]admin.App, error) {
		return cl.Apps(ctx)
	}, func(w io.Writer, apps []admin.App) error {
		tw := cli.Table(w)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED")
		for _, a := range apps {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", a.ID, a.Name, a.Created.Format(time.RFC3339))
		}
		return tw.Flush()
	})
}

func (c *cmd) channels(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl channels", "", "List channels and the package each carries per board.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Channel, error) {
		return cl.Channels(ctx, app)
	}, printChannels)
}

func printChannels(w io.Writer, chs []admin.Channel) error {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "CHANNEL\tBOARD\tVERSION\tSECURITY\tSIZE\tPUBLISHED\tDOWNLOADS")
	for _, ch := range chs {
		from := "omahad"
		if ch.ExternalURL != "" {
			from = ch.ExternalURL + " (then omahad)"
		}
		if len(ch.Packages) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t%s\n", ch.Name, from)
		}
		for _, b := range cli.SortedKeys(ch.Packages) {
			p := ch.Packages[b]
			src := from
			if p.URL != "" {
				src = p.URL
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", ch.Name, b, p.Version, p.SecurityVersion, progress.Bytes(p.Size),
				p.Created.Format("2006-01-02 15:04"), src)
		}
	}
	return tw.Flush()
}

func (c *cmd) channelSetURL(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl channel set-url", "--channel C URL|\"\"",
		`Serve a channel's downloads from an external base URL first (hosts fall back to omahad).
{board}, {version} and {sha256} in the URL are replaced per package. An empty URL clears it.`)
	k := c.connFlags(fs, true)
	channel := fs.String("channel", "", "channel (alpha, beta or stable)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 1, 1, "a base URL (or \"\" to clear)"); err != nil {
		return err
	}
	if *channel == "" {
		return cli.Usagef("--channel is required")
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Channel, error) {
		return cl.SetChannel(ctx, app, *channel, admin.ChannelChange{ExternalURL: pos[0]})
	}, func(w io.Writer, ch admin.Channel) error {
		_, err := fmt.Fprintf(w, "%s downloads: %q\n", ch.Name, ch.ExternalURL)
		return err
	})
}

func (c *cmd) packages(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl packages", "", "List published packages, newest first.")
	k := c.connFlags(fs, true)
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Package, error) {
		return cl.Packages(ctx, app)
	}, printPackages)
}

func printPackages(w io.Writer, ps []admin.Package) error {
	tw := cli.Table(w)
	fmt.Fprintln(tw, "VERSION\tBOARD\tSECURITY\tSIZE\tSHA256\tPUBLISHED\tNOTE")
	for _, p := range ps {
		var notes []string
		if p.Format == admin.FormatFlatcar {
			notes = append(notes, fmt.Sprintf("flatcar, %d extra", len(p.Extras)))
		}
		if p.Withdrawn {
			notes = append(notes, "withdrawn")
		}
		note := strings.Join(notes, "; ")
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.16s…\t%s\t%s\n", p.Version, p.Board, p.SecurityVersion, progress.Bytes(p.Size), p.SHA256,
			p.Created.Format("2006-01-02 15:04"), note)
	}
	return tw.Flush()
}
