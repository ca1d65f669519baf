package releasectl

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

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
	d, err := omaha.DigestOf(f)
	if err != nil {
		return admin.File{}, fmt.Errorf("%s: %w", file, err)
	}
	return admin.File{Name: filepath.Base(file), Size: d.Size, SHA256: hex.EncodeToString(d.SHA256[:]),
		SHA1: base64.StdEncoding.EncodeToString(d.SHA1[:])}, nil
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
