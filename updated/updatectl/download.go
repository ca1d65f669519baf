package updatectl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cavaliergopher/grab/v3"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition/osrelease"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
	"github.com/twinslot/twinslot/updated/enroll"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// DownloadReport is the output of `updatectl download --json`.
type DownloadReport struct {
	Offered  bool   `json:"offered"`
	Version  string `json:"version,omitempty"`
	File     string `json:"file,omitempty"`
	Size     int64  `json:"size,omitempty"`
	SHA256   string `json:"sha256,omitempty"` // hex, as the server announced and the file has
	Resumed  bool   `json:"resumed,omitempty"`
	URL      string `json:"url,omitempty"`
	Verified bool   `json:"verified,omitempty"` // signature checked against --trust
}

func (env Env) runDownload(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl download", "--to FILE [--server URL] [--group G] [--trust trust.json] [--json]", `
Ask the update server which payload it offers this host (an Omaha update check with the
host's identity: machine id, running version, board, group) and download it into FILE, for
an offline install (payload apply) or a mirror. The download goes to FILE.part first and is
resumed from there when interrupted; FILE appears only once the SHA-256 the server announced
matches. With --trust the payload's signature is verified too.

Identity and server come from the host (/etc/machine-id, /usr/lib/os-release, update.conf)
unless the flags give them.`)
	to := fs.String("to", "", "destination `file` (required)")
	server := fs.String("server", "", "Omaha update `URL` (default: SERVER from update.conf)")
	group := fs.String("group", "", "group/track (default: GROUP from update.conf)")
	config := fs.String("config", "", "update.conf `file` (default: the layered files updated reads; see updatectl config)")
	version := fs.String("version", "", "running version to report (default: VERSION from /usr/lib/os-release)")
	board := fs.String("board", "", "board to report (default: BOARD from /usr/lib/os-release)")
	machineID := fs.String("machine-id", "", "machine id to report (default: /etc/machine-id)")
	trust := fs.String("trust", "", "verify the payload against this trust root `file`")
	dir := fs.String("state-dir", DefaultStateDir, "updated's state `directory`: its host credential, if enrolled, is sent")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return cli.Usagef("--to FILE is required")
	}
	id, err := env.identity(*config, *server, *group, *version, *board, *machineID)
	if err != nil {
		return err
	}
	var cred string
	if c, err := enroll.Load(*dir, id.host.AppID, id.host.MachineID); err == nil {
		cred = c.Credential
	}
	cl, err := omaha.NewClient([]string{id.server}, omaha.ClientOptions{Credential: cred})
	if err != nil {
		return err
	}
	res, err := cl.UpdateCheck(ctx, id.host, omaha.CheckOptions{Interactive: true})
	if err != nil {
		return err
	}
	u := res.Update
	if u == nil {
		if *asJSON {
			return cli.PrintJSON(stdio.Stdout, DownloadReport{})
		}
		fmt.Fprintf(stdio.Stdout, "the server offers no update for %s %s in group %s\n", id.host.Board, id.host.Version, id.host.Track)
		return nil
	}
	rep := DownloadReport{Offered: true, Version: u.Version, File: *to, Size: u.Size, SHA256: hex.EncodeToString(u.SHA256[:])}
	var lastErr error
	for _, url := range u.DownloadURLs() {
		rep.URL = url
		rep.Resumed, lastErr = fetch(ctx, stdio, url, *to, u)
		if lastErr == nil || ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stdio.Stderr, "updatectl: download from %s failed: %v\n", url, lastErr)
	}
	if lastErr != nil {
		return lastErr
	}
	if *trust != "" {
		if err := verifyFile(*to, *trust, id.host.Board, u.Version); err != nil {
			return err
		}
		rep.Verified = true
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, rep)
	}
	fmt.Fprintf(stdio.Stdout, "downloaded %s (%s, sha256 %s) to %s\n", u.Version, progress.Bytes(u.Size), rep.SHA256, *to)
	if rep.Verified {
		fmt.Fprintf(stdio.Stdout, "signature verified against %s\n", *trust)
	}
	return nil
}

type identity struct {
	server string
	host   omaha.Host
}

// identity assembles what the check reports, flags first, then the host's files.
func (env Env) identity(config, server, group, version, board, machineID string) (identity, error) {
	paths := updateconf.DefaultPaths()
	if config != "" {
		paths = []string{config}
	}
	c, err := updateconf.Load(paths...)
	if err != nil {
		return identity{}, err
	}
	id := identity{server: server, host: omaha.Host{AppID: payload.DefaultAppID, Track: group, Version: version, Board: board, MachineID: machineID}}
	if id.server == "" {
		id.server = strings.Fields(c.Server + " ")[0]
	}
	if id.server == "" || id.server == updateconf.ServerDisabled {
		return identity{}, errors.New("no update server: set SERVER in update.conf or pass --server URL")
	}
	if id.host.Track == "" {
		id.host.Track = c.Group
	}
	id.host.MachineAlias = c.MachineAlias
	if id.host.MachineID == "" {
		b, err := readHost(env.Host, "etc/machine-id")
		if err != nil {
			return identity{}, fmt.Errorf("%w (or pass --machine-id)", err)
		}
		id.host.MachineID = strings.TrimSpace(string(b))
	}
	if b, err := readHost(env.Host, "proc/sys/kernel/random/boot_id"); err == nil {
		id.host.BootID = strings.TrimSpace(string(b))
	}
	if id.host.Version == "" || id.host.Board == "" {
		b, err := readHost(env.Host, "usr/lib/os-release")
		if err != nil {
			return identity{}, fmt.Errorf("%w (or pass --version and --board)", err)
		}
		rel, err := osrelease.Parse(b)
		if err != nil {
			return identity{}, fmt.Errorf("/usr/lib/os-release: %w (or pass --version and --board)", err)
		}
		if id.host.Version == "" {
			id.host.Version = rel.Version
		}
		if id.host.Board == "" {
			id.host.Board = rel.Board
		}
	}
	return id, nil
}

func readHost(host fs.FS, name string) ([]byte, error) {
	if host == nil {
		return nil, fmt.Errorf("no host filesystem to read /%s from", name)
	}
	b, err := fs.ReadFile(host, name)
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", name, err)
	}
	return b, nil
}

// fetch downloads url into to (through to.part, resumed), checking size and SHA-256.
func fetch(ctx context.Context, stdio cli.IO, url, to string, u *omaha.Update) (bool, error) {
	if ok, err := matches(to, u); err == nil && ok {
		return true, nil // already complete
	}
	part := to + ".part"
	req, err := grab.NewRequest(part, url)
	if err != nil {
		return false, fmt.Errorf("download %s: %w", url, err)
	}
	req = req.WithContext(ctx)
	req.Size = u.Size
	req.NoCreateDirectories = true
	req.IgnoreRemoteTime = true
	req.SetChecksum(sha256.New(), u.SHA256[:], true) // a corrupt .part is removed, so a retry starts over
	c := grab.NewClient()
	c.HTTPClient = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 60 * time.Second}}
	c.UserAgent = "updatectl"
	resp := c.Do(req)
	bar := progress.New(stdio.Stderr, cli.IsTerminal(stdio.Stderr), "downloading "+u.Version, u.Size, nil)
	t := time.NewTicker(progress.Interval)
	defer t.Stop()
loop:
	for {
		select {
		case <-resp.Done:
			break loop
		case <-t.C:
			extra := ""
			if resp.DidResume {
				extra = "resumed"
			}
			bar.Set(resp.BytesComplete(), extra)
		}
	}
	bar.Set(resp.BytesComplete(), "")
	bar.Finish()
	if err := resp.Err(); err != nil {
		if errors.Is(err, grab.ErrBadChecksum) {
			return false, fmt.Errorf("download %s: the file does not have the SHA-256 the server announced; it was removed, run the command again", url)
		}
		return false, fmt.Errorf("download %s: %w (run the command again to resume)", url, err)
	}
	if err := os.Rename(part, to); err != nil {
		return false, fmt.Errorf("download: %w", err)
	}
	return resp.DidResume, nil
}

// matches reports whether path already holds the offered file.
func matches(path string, u *omaha.Update) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() != u.Size {
		return false, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return [32]byte(h.Sum(nil)) == u.SHA256, nil
}

// verifyFile checks the downloaded payload's signature, app, board and version.
func verifyFile(path, trustPath, board, version string) error {
	tr, err := payload.LoadTrustRoot(trustPath)
	if err != nil {
		return err
	}
	pf, err := payload.OpenFile(path)
	if err != nil {
		return err
	}
	defer pf.Close()
	m, err := pf.Verify(tr, payload.Expect{AppID: payload.DefaultAppID, Board: board})
	if err != nil {
		return err
	}
	if m.Version != version {
		return fmt.Errorf("the payload is version %s, but the server offered %s", m.Version, version)
	}
	return nil
}
