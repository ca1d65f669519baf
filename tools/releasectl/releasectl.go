package releasectl

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
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
			{Name: "pause", Summary: "stop offering updates to a group", Run: c.groupPause},
			{Name: "resume", Summary: "offer updates to a group again", Run: c.groupResume},
		}},
		{Name: "instances", Summary: "list hosts", Run: c.instances},
		{Name: "events", Summary: "list events hosts reported (one host, or recent failures)", Run: c.events},
		{Name: "status", Summary: "per channel its version; per group hosts by version and state", Run: c.status},
		{Name: "gates", Summary: "list the promotion gates of the channels", Run: c.gates},
		{Name: "gate", Summary: "manage promotion gates", Sub: c.gateCommands()},
		{Name: "audit", Summary: "list who changed what on the server, when and from where", Run: c.audit},
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

func (c *cmd) publish(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl publish", `[--channel alpha] [--name N] [--url U] FILE
  releasectl publish --version V [--board B] [--channel C] --flatcar FILE [--extra FILE]...
  releasectl publish --version V [--board B] [--channel C] --url URL --size N --sha256 HEX --sha1 B64 [--extra FILE]...`,
		`Upload a payload file. The server verifies it against the app's trust root and refuses what
does not verify; with --channel it then points that channel at it. With --url the server keeps
only the record, and hosts download the file from that URL. Without --app the payload's own app
id is used.

Flatcar payloads (update_engine's flatcar_production_update.gz, "CrAU" format) are published
with --version: --flatcar FILE uploads the file, which the server checks (CrAU header, size,
SHA-256, SHA-1) and serves; --url with --size, --sha256 (hex) and --sha1 (base64, as in Omaha's
hash attribute) records a file hosts download elsewhere. --extra FILE adds an OEM or sysext
image served from the same place (uploaded with --flatcar; with --url only hashed here and
expected next to URL). Without --app, Flatcar's app id `+flatcarAppID+` is used; create that
app with 'releasectl app create --id `+flatcarAppID+` --name flatcar' (no --trust needed).`)
	k := c.connFlags(fs, true)
	channel := fs.String("channel", "", "point this channel at the package (alpha, beta or stable)")
	name := fs.String("name", "", "file name hosts download (default: FILE's base name)")
	ext := fs.String("url", "", "external download URL of the same file (CDN)")
	version := fs.String("version", "", "Flatcar: the version of the payload, e.g. 4152.2.0")
	board := fs.String("board", "amd64-usr", "Flatcar: the board the payload is for")
	fcFile := fs.String("flatcar", "", "Flatcar: upload this update_engine payload")
	size := fs.Int64("size", 0, "Flatcar with --url: the file's size in bytes")
	sum256 := fs.String("sha256", "", "Flatcar with --url: the file's SHA-256, hex")
	sum1 := fs.String("sha1", "", "Flatcar with --url: the file's SHA-1, base64")
	var extras []string
	fs.Func("extra", "Flatcar: an extra file served alongside (repeatable)", func(v string) error {
		extras = append(extras, v)
		return nil
	})
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	external := flagSet(fs, "size") || flagSet(fs, "sha256") || flagSet(fs, "sha1")
	if *fcFile != "" || external {
		if len(pos) > 0 {
			return cli.Usagef("a Flatcar payload is given with --flatcar FILE or --url, not as an argument")
		}
		if *fcFile != "" && (external || *ext != "") {
			return cli.Usagef("--flatcar FILE uploads the payload: do not combine it with --url, --size, --sha256, --sha1")
		}
		if *version == "" {
			return cli.Usagef("--version is required for a Flatcar payload")
		}
		if !flagSet(fs, "app") && c.app == "" {
			k.app = flatcarAppID
		}
		fp := admin.FlatcarPackage{Version: *version, Board: *board, Channel: *channel, Name: *name,
			URL: *ext, Size: *size, SHA256: *sum256, SHA1: *sum1}
		if external {
			if *ext == "" || *size <= 0 || *sum256 == "" || *sum1 == "" {
				return cli.Usagef("an external Flatcar payload needs --url, --size, --sha256 and --sha1")
			}
			if *name != "" {
				return cli.Usagef("--name: the file name is the last part of --url")
			}
			fp.Name = path.Base(*ext)
		}
		return c.publishFlatcar(ctx, stdio, k, fp, *fcFile, extras)
	}
	if len(extras) > 0 || flagSet(fs, "version") || flagSet(fs, "board") {
		return cli.Usagef("--version, --board and --extra are for Flatcar payloads (--flatcar FILE or --url with --size/--sha256/--sha1); a twinslot payload names its own version and board")
	}
	if err := cli.NArgs(pos, 1, 1, "a payload FILE"); err != nil {
		return err
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if *name == "" && *ext == "" {
		*name = filepath.Base(pos[0])
	}
	if !flagSet(fs, "app") && c.app == "" {
		pf, err := payload.Open(f, st.Size())
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		m, err := pf.Unverified() // only to pick the app; the server verifies the payload
		if err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
		k.app = m.AppID
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Package, error) {
		bar := progress.New(stdio.Stderr, cli.IsTerminal(stdio.Stderr), "upload", st.Size(), c.env.Now)
		defer bar.Finish()
		return cl.Publish(ctx, app, &countingReader{r: f, bar: bar}, st.Size(), admin.PublishOptions{Channel: *channel, Name: *name, URL: *ext})
	}, func(w io.Writer, p admin.Package) error {
		fmt.Fprintf(w, "published %s for %s (%s, sha256 %s)", p.Version, p.Board, progress.Bytes(p.Size), p.SHA256)
		if *channel != "" {
			fmt.Fprintf(w, " to %s", *channel)
		}
		_, err := fmt.Fprintln(w)
		return err
	})
}

// flatcarAppID is Flatcar's default Omaha app id, what its hosts send unless their release
// file says otherwise.
const flatcarAppID = "e96281a6-d1af-4bde-9a0a-97b76e56dc57"

// publishFlatcar uploads (upload != "") or hashes the files of a Flatcar package and creates
// it. Extras are uploaded with an uploaded payload and only hashed for an external one.
func (c *cmd) publishFlatcar(ctx context.Context, stdio cli.IO, k *conn, fp admin.FlatcarPackage, upload string, extras []string) error {
	return do(c, stdio, k, func(cl *admin.Client, app string) (admin.Package, error) {
		send := func(file string) (admin.File, error) {
			f, err := os.Open(file)
			if err != nil {
				return admin.File{}, err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return admin.File{}, err
			}
			bar := progress.New(stdio.Stderr, cli.IsTerminal(stdio.Stderr), "upload "+filepath.Base(file), st.Size(), c.env.Now)
			defer bar.Finish()
			out, err := cl.UploadFile(ctx, app, &countingReader{r: f, bar: bar}, st.Size())
			out.Name = filepath.Base(file)
			return out, err
		}
		if fp.URL == "" {
			main, err := send(upload)
			if err != nil {
				return admin.Package{}, err
			}
			if fp.Name == "" {
				fp.Name = main.Name
			}
			fp.Size, fp.SHA256, fp.SHA1 = main.Size, main.SHA256, main.SHA1
		}
		for _, e := range extras {
			get := send
			if fp.URL != "" {
				get = hashFile
			}
			f, err := get(e)
			if err != nil {
				return admin.Package{}, err
			}
			fp.Extras = append(fp.Extras, f)
		}
		return cl.PublishFlatcar(ctx, app, fp)
	}, func(w io.Writer, p admin.Package) error {
		fmt.Fprintf(w, "published Flatcar %s for %s (%s, sha256 %s", p.Version, p.Board, progress.Bytes(p.Size), p.SHA256)
		if len(p.Extras) > 0 {
			fmt.Fprintf(w, ", %d extra file(s)", len(p.Extras))
		}
		fmt.Fprint(w, ")")
		if fp.Channel != "" {
			fmt.Fprintf(w, " to %s", fp.Channel)
		}
		_, err := fmt.Fprintln(w)
		return err
	})
}

// hashFile returns the size and digests of a local file, named by its base name.
func hashFile(file string) (admin.File, error) {
	f, err := os.Open(file)
	if err != nil {
		return admin.File{}, err
	}
	defer f.Close()
	h256, h1 := sha256.New(), sha1.New()
	n, err := io.Copy(io.MultiWriter(h256, h1), f)
	if err != nil {
		return admin.File{}, fmt.Errorf("%s: %w", file, err)
	}
	return admin.File{Name: filepath.Base(file), Size: n, SHA256: hex.EncodeToString(h256.Sum(nil)),
		SHA1: base64.StdEncoding.EncodeToString(h1.Sum(nil))}, nil
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// countingReader reports upload progress.
type countingReader struct {
	r   io.Reader
	n   int64
	bar *progress.Bar
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.bar.Set(c.n, "")
	return n, err
}

func (c *cmd) promote(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl promote", "--version V --from alpha --to beta [--force --reason TEXT]",
		`Point channel --to at the packages of version V that channel --from carries now (every board).
When --to has a promotion gate (releasectl gates) that V does not pass, the server refuses and
says which check misses and by how much; --force --reason TEXT promotes anyway and records the
reason and the missed checks in the audit log.`)
	k := c.connFlags(fs, true)
	version := fs.String("version", "", "version to promote")
	from := fs.String("from", "", "channel that carries it now")
	to := fs.String("to", "", "channel to point at it")
	force := fs.Bool("force", false, "promote even if the gate of --to does not pass (needs --reason)")
	reason := fs.String("reason", "", "why the gate is overridden (with --force; kept in the audit log)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *version == "" || *from == "" || *to == "" {
		return cli.Usagef("--version, --from and --to are required")
	}
	if *force != (*reason != "") {
		return cli.Usagef("--force and --reason go together: say why the gate is overridden")
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Package, error) {
		ps, err := cl.Promote(ctx, app, admin.Promote{Version: *version, From: *from, To: *to, Force: *force, Reason: *reason})
		return ps, gateRefusal(err, *to)
	}, func(w io.Writer, ps []admin.Package) error {
		for _, p := range ps {
			fmt.Fprintf(w, "%s now carries %s for %s\n", *to, p.Version, p.Board)
		}
		return nil
	})
}

func (c *cmd) withdraw(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl withdraw", "--version V",
		`Withdraw every package of version V: no channel offers it any more and each channel that
carried it falls back to its previous package. Hosts that already installed it are not touched.`)
	k := c.connFlags(fs, true)
	version := fs.String("version", "", "version to withdraw")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *version == "" {
		return cli.Usagef("--version is required")
	}
	return do(c, stdio, k, func(cl *admin.Client, app string) ([]admin.Package, error) {
		return cl.Withdraw(ctx, app, *version)
	}, func(w io.Writer, ps []admin.Package) error {
		for _, p := range ps {
			fmt.Fprintf(w, "withdrew %s for %s\n", p.Version, p.Board)
		}
		return nil
	})
}

func parseNoArgs(fs *flag.FlagSet, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	return cli.NArgs(pos, 0, 0, "no arguments")
}

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
	return nil
}

// given returns the names of the flags set on the command line.
func given(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
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
			HaltOnFailures: *pf.halt, DisablePayloadBackoff: *pf.backoff,
		}})
	}, printGroup)
}

func printGroup(w io.Writer, g admin.Group) error {
	_, err := fmt.Fprintf(w, "group %s (%s) follows %s: %s\n", g.Name, g.ID, g.Channel, policyString(g.Policy))
	printHalted(w, []admin.Group{g})
	return err
}

func (c *cmd) groupUpdate(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("releasectl group update", "GROUP [--channel C] [--enabled=false] [--max-updates N] [--period D] [--update-timeout D] [--halt-on-failures N] [--disable-payload-backoff]",
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
	var ch admin.GroupChange
	if set["channel"] {
		ch.Channel = pf.channel
	}
	if set["enabled"] {
		ch.Enabled = pf.enabled
	}
	if set["max-updates"] {
		ch.MaxUpdates = pf.max
	}
	if set["period"] {
		ch.Period = (*admin.Duration)(pf.period)
	}
	if set["update-timeout"] {
		ch.UpdateTimeout = (*admin.Duration)(pf.timeout)
	}
	if set["halt-on-failures"] {
		ch.HaltOnFailures = pf.halt
	}
	if set["disable-payload-backoff"] {
		ch.DisablePayloadBackoff = pf.backoff
	}
	if ch == (admin.GroupChange{}) {
		return cli.Usagef("nothing to change: give at least one of --channel, --enabled, --max-updates, --period, --update-timeout, --halt-on-failures, --disable-payload-backoff")
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
