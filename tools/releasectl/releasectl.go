package releasectl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
)

const summary = `publish, promote and steer twinslot releases on an omahad server.
Every command takes --server URL and --token T (before or after the command name; defaults
$RELEASECTL_SERVER and $RELEASECTL_TOKEN), --app ID (default the twinslot app) and, where
scripts read the output, --json`

// Env holds what the command takes from its surroundings. The binary fills Server and Token
// from RELEASECTL_SERVER and RELEASECTL_TOKEN; --server and --token override them.
type Env struct {
	Server string
	Token  string
	HTTP   *http.Client     // nil = a client without a global timeout (uploads are long)
	Now    func() time.Time // nil = time.Now (progress rates)
}

// Main runs releasectl with args (without the program name) and no environment defaults; it
// returns the exit code: 0 success, 1 failure, 2 usage error.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is releasectl with env's defaults and dependencies (see Main).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	stdio := cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	// Global flags may also come before the command: releasectl --server URL --token T publish …
	gfs := stdio.FlagSet("releasectl", "[--server URL] [--token T] [--app ID] [--json] <command> [flags] [args]", "")
	gfs.StringVar(&env.Server, "server", env.Server, "omahad base URL (default $RELEASECTL_SERVER)")
	// The token's default is never a flag default: help would print the secret.
	var token string
	gfs.StringVar(&token, "token", "", "admin API token (default $RELEASECTL_TOKEN)")
	c := &cmd{}
	gfs.StringVar(&c.app, "app", "", "app id")
	gfs.BoolVar(&c.json, "json", false, "print JSON for scripts")
	gfs.Usage = func() {} // the command list below is the help
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.Run(ctx, "releasectl", summary, (&cmd{env: env}).commands(), []string{"--help"}, stdio)
		}
		fmt.Fprintf(stderr, "releasectl: %v\nRun 'releasectl --help' for usage.\n", err)
		return 2
	}
	if token != "" {
		env.Token = token
	}
	c.env = env
	return cli.Run(ctx, "releasectl", summary, c.commands(), gfs.Args(), stdio)
}

// cmd is a command line: the environment and the global flags given before the command, which
// are the defaults of the same flags after it.
type cmd struct {
	env  Env
	app  string // "" = the twinslot app
	json bool
}

func (c *cmd) commands() []cli.Command {
	return []cli.Command{
		{Name: "publish", Summary: "upload a payload (verified by the server) and point a channel at it", Run: c.publish},
		{Name: "promote", Summary: "point a channel at the version another channel carries", Run: c.promote},
		{Name: "withdraw", Summary: "withdraw a bad version: channels fall back to their previous package", Run: c.withdraw},
		{Name: "app", Summary: "manage apps and their trust roots", Sub: []cli.Command{
			{Name: "create", Summary: "create an app (with channels alpha, beta, stable)", Run: c.appCreate},
			{Name: "set-trust", Summary: "replace an app's payload trust root", Run: c.appSetTrust},
			{Name: "list", Summary: "list apps", Run: c.appList},
		}},
		{Name: "channels", Summary: "list channels and the version each carries per board", Run: c.channels},
		{Name: "channel", Summary: "change a channel", Sub: []cli.Command{
			{Name: "set-url", Summary: "serve a channel's downloads from an external base URL (CDN)", Run: c.channelSetURL},
		}},
		{Name: "packages", Summary: "list published packages", Run: c.packages},
		{Name: "groups", Summary: "list groups and their rollout policy", Run: c.groups},
		{Name: "group", Summary: "manage groups", Sub: []cli.Command{
			{Name: "create", Summary: "create a group following a channel", Run: c.groupCreate},
			{Name: "update", Summary: "change a group's channel or policy", Run: c.groupUpdate},
			{Name: "set", Summary: "the same as update (e.g. group set GROUP --waves 1%:1h,100%)", Run: c.groupUpdate},
			{Name: "show", Summary: "show a group's policy, hosts and where its rollout in waves stands", Run: c.groupShow},
			{Name: "pause", Summary: "stop offering updates to a group", Run: c.groupPause},
			{Name: "resume", Summary: "offer updates to a group again", Run: c.groupResume},
		}},
		{Name: "instances", Summary: "list hosts", Run: c.instances},
		{Name: "events", Summary: "list events hosts reported (one host, or recent failures)", Run: c.events},
		{Name: "status", Summary: "per channel its version; per group hosts by version and state", Run: c.status},
		{Name: "gates", Summary: "list the promotion gates of the channels", Run: c.gates},
		{Name: "gate", Summary: "manage promotion gates", Sub: c.gateCommands()},
		{Name: "audit", Summary: "list who changed what on the server, when and from where", Run: c.audit},
		{Name: "enroll-token", Summary: "manage the tokens hosts enroll with (groups with --require-enrollment)", Sub: c.enrollTokenCommands()},
		{Name: "unenroll", Summary: "delete a host's credential: it must enroll again to be trusted", Run: c.unenroll},
		{Name: "mirror", Summary: "follow an upstream Omaha server and republish what it offers here", Run: c.mirror},
	}
}

// conn holds the flags every command shares.
type conn struct {
	server, token, app string
	json               bool
	noJSON             bool // the command prints no JSON: a global --json is a usage error
}

func (c *cmd) connFlags(fs *flag.FlagSet, withJSON bool) *conn {
	k := &conn{}
	fs.StringVar(&k.server, "server", c.env.Server, "omahad base URL (default $RELEASECTL_SERVER)")
	fs.StringVar(&k.token, "token", "", "admin API token (default $RELEASECTL_TOKEN)") // not c.env.Token: help would show it
	app := c.app
	if app == "" {
		app = payload.DefaultAppID
	}
	fs.StringVar(&k.app, "app", app, "app id")
	if withJSON {
		fs.BoolVar(&k.json, "json", c.json, "print JSON for scripts")
	} else {
		k.noJSON = c.json
	}
	return k
}

// client checks the connection flags and returns an API client and the bare app id.
func (c *cmd) client(k *conn) (*admin.Client, string, error) {
	if k.server == "" {
		return nil, "", cli.Usagef("no server: pass --server URL or set RELEASECTL_SERVER")
	}
	if k.noJSON {
		return nil, "", cli.Usagef("--json: this command prints no JSON")
	}
	if k.token == "" {
		k.token = c.env.Token
	}
	if k.token == "" {
		return nil, "", cli.Usagef("no token: pass --token T or set RELEASECTL_TOKEN (create one with 'omahad token create')")
	}
	app, err := omaha.ParseAppID(k.app)
	if err != nil {
		return nil, "", cli.Usagef("--app %q is not a UUID", k.app)
	}
	cl, err := admin.NewClient(k.server, k.token, c.env.HTTP)
	if err != nil {
		return nil, "", cli.Usagef("%v", err)
	}
	return cl, app, nil
}

// do runs what every command does once its flags are parsed: connect, call the API, and
// print the answer as JSON (--json) or as text for people.
func do[T any](c *cmd, stdio cli.IO, k *conn, call func(cl *admin.Client, app string) (T, error), text func(w io.Writer, v T) error) error {
	cl, app, err := c.client(k)
	if err != nil {
		return err
	}
	v, err := call(cl, app)
	if err != nil {
		return explain(err)
	}
	if k.json {
		return cli.PrintJSON(stdio.Stdout, v)
	}
	return text(stdio.Stdout, v)
}

// explain turns API errors into messages that say what to do.
func explain(err error) error {
	var ae *admin.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("the server refused the token (%s): check --token / RELEASECTL_TOKEN", ae.Message)
	case http.StatusForbidden:
		return fmt.Errorf("%s", ae.Message)
	case http.StatusUnprocessableEntity:
		return fmt.Errorf("the server refused the payload: %s", ae.Message)
	}
	return fmt.Errorf("%s", ae.Message)
}

func parseNoArgs(fs *flag.FlagSet, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	return cli.NArgs(pos, 0, 0, "no arguments")
}
