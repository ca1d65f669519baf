package payloadcmd

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/kms"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/partition/slotrelease"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

const summary = "build, sign, verify, inspect and apply twinslot update payloads"

// Main runs the payload command line with args (without the program name) and returns the exit
// code: 0 success, 1 failure (including every rejected payload), 2 usage error. It has no host
// filesystem, so 'apply' needs --disk; the binary uses Env.Main with the real root.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{Now: time.Now}.Main(ctx, args, stdin, stdout, stderr)
}

// Env holds the command's dependencies.
type Env struct {
	Now func() time.Time
	// Host is the running system's root directory (os.DirFS("/")), where 'apply' without --disk
	// finds the booted /usr (proc/cmdline, sys/…) and its BOARD (usr/lib/os-release). Nil makes
	// --disk required.
	Host fs.FS
	// ESPDir is the running host's ESP mount point (/boot): apply's --esp default when it
	// installs to the booted disk. Empty: no ESP unless --esp is given.
	ESPDir string

	// gpt, when set, wraps the disk apply changes the GPT through; tests make its writes fail
	// (export_test.go).
	gpt func(*partition.Disk) gptWriter
	// keygenChecked, when set, runs after keygen checked its output paths and before it writes
	// them; tests create a file there as another process could (export_test.go).
	keygenChecked func()
}

// Main is the payload command line with env's dependencies (see Main).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if env.Now == nil {
		env.Now = time.Now
	}
	c := &cmd{env: env}
	return cli.Run(ctx, "payload", summary, c.commands(), args, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

type cmd struct{ env Env }

func (c *cmd) commands() []cli.Command {
	return []cli.Command{
		{Name: "keygen", Summary: "make a signing key pair (NAME.key, NAME.pub)", Run: c.keygen},
		{Name: "trust", Summary: "manage trust roots", Sub: []cli.Command{
			{Name: "init", Summary: "write a trust root from public keys", Run: c.trustInit},
		}},
		{Name: "build", Summary: "build an unsigned payload from a /usr image", Run: c.build},
		{Name: "sign", Summary: "add a signature to a payload", Run: c.sign},
		{Name: "verify", Summary: "verify a payload against a trust root", Run: c.verify},
		{Name: "inspect", Summary: "show what a payload holds (signatures NOT checked)", Run: c.inspect},
		{Name: "apply", Summary: "install a payload into the inactive slot of a disk", Run: c.apply},
	}
}

// parseOne parses args and requires exactly one positional argument, what.
func parseOne(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return "", err
	}
	if err := cli.NArgs(pos, 1, 1, what); err != nil {
		return "", err
	}
	return pos[0], nil
}

// loadTrust loads the --trust file, which is required.
func loadTrust(path string) (*payload.TrustRoot, error) {
	if path == "" {
		return nil, cli.Usagef("--trust is required")
	}
	return payload.LoadTrustRoot(path)
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func (c *cmd) keygen(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload keygen", "-o NAME [--type ecdsa-p256|ed25519]",
		"Writes a new signing key: NAME.key (private, mode 0600) and NAME.pub (public). Prints the key id.\nKeep NAME.key offline; put NAME.pub into trust roots with 'payload trust init'.")
	out := fs.String("o", "", "output name (writes NAME.key and NAME.pub)")
	kt := fs.String("type", payload.KeyECDSAP256, "key type: ecdsa-p256 or ed25519")
	force := fs.Bool("force", false, "overwrite existing files")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("-o NAME is required")
	}
	if *kt != payload.KeyECDSAP256 && *kt != payload.KeyEd25519 {
		return cli.Usagef("--type %q: want ecdsa-p256 or ed25519", *kt)
	}
	priv, pub, err := payload.GenerateKey(*kt, nil)
	if err != nil {
		return err
	}
	tk, err := payload.NewTrustedKey(pub)
	if err != nil {
		return err
	}
	keyPath, pubPath := *out+".key", *out+".pub"
	// Both paths are checked before either is written, so a refusal changes nothing. Anything but
	// an absent path or a regular file is refused even with --force: a directory, a device, and a
	// symbolic link (whose target the operator may expect to be overwritten; the rename below
	// would replace the link itself). Without --force this check only gives the clear message:
	// another process may create either file after it, which writeNew below refuses.
	for _, path := range []string{keyPath, pubPath} {
		st, err := os.Lstat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("keygen: %w", err)
		case st.Mode()&os.ModeSymlink != 0:
			return symlinkRefused(path)
		case st.IsDir():
			return fmt.Errorf("keygen: %s is a directory: remove it or choose another -o", path)
		case !st.Mode().IsRegular():
			return fmt.Errorf("keygen: %s is not a regular file: remove it or choose another -o", path)
		case !*force:
			return existsRefused(path)
		}
	}
	if c.env.keygenChecked != nil {
		c.env.keygenChecked()
	}
	if *force {
		// Each file is replaced atomically (temporary file, fsync, rename), NAME.pub first:
		// whatever fails or crashes, NAME.key is either the old private key or the new one, never
		// a torn file, and a new NAME.key always has its NAME.pub beside it.
		if err := atomicfile.WriteFile(pubPath, pub, 0o644); err != nil {
			return fmt.Errorf("keygen: %w", err)
		}
		if err := atomicfile.WriteFile(keyPath, priv, 0o600); err != nil {
			return fmt.Errorf("keygen: wrote the new %s but not %s (%w): the two no longer belong together; fix the cause and run 'payload keygen --force -o %s' again",
				pubPath, keyPath, err, *out)
		}
	} else if err := writeNewPair(pubPath, pub, keyPath, priv); err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, "wrote %s.key and %s.pub (%s)\nkey id %s\n", *out, *out, *kt, tk.ID)
	return nil
}

// writeNewPair writes NAME.pub and then NAME.key, each only where nothing exists at the moment
// it is placed (writeNew), so a key file another process creates at any time is never replaced.
// When NAME.key cannot be placed, the NAME.pub placed just before is removed again: a refusal
// leaves nothing behind.
func writeNewPair(pubPath string, pub []byte, keyPath string, priv []byte) error {
	placed, err := writeNew(pubPath, pub, 0o644)
	if err != nil {
		return newFileErr(pubPath, err)
	}
	if _, err := writeNew(keyPath, priv, 0o600); err != nil {
		err = newFileErr(keyPath, err)
		if rerr := removeIfSame(pubPath, placed); rerr != nil {
			return fmt.Errorf("%w; the new %s it belongs with could not be removed again (%v): remove it by hand", err, pubPath, rerr)
		}
		return err
	}
	return nil
}

// newFileErr is keygen's error for a writeNew of path that failed with err.
func newFileErr(path string, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return existsRefused(path)
	}
	return fmt.Errorf("keygen: %w", err)
}

func existsRefused(path string) error {
	return fmt.Errorf("keygen: %s exists: move it away or use --force to overwrite it", path)
}

func symlinkRefused(path string) error {
	return fmt.Errorf("keygen: %s is a symbolic link: refusing to write a key through it; remove it or choose another -o", path)
}

func (c *cmd) trustInit(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload trust init", "--key NAME.pub [--key …] [--threshold K] [--floor N] [--revoke ID] -o trust.json",
		"Writes a trust root: payloads need valid signatures by K distinct listed, non-revoked keys and a\nsecurity version of at least N. To rotate keys, list old and new keys and sign payloads with both.")
	var keys, revoked multiFlag
	fs.Var(&keys, "key", "public key file (repeat for several)")
	fs.Var(&revoked, "revoke", "key id to refuse (repeat for several)")
	threshold := fs.Int("threshold", 1, "distinct valid signatures required")
	floor := fs.Uint64("floor", 0, "lowest security version accepted")
	out := fs.String("o", "", "output trust root file")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if len(keys) == 0 || *out == "" {
		return cli.Usagef("--key and -o are required")
	}
	var pems [][]byte
	for _, k := range keys {
		b, err := os.ReadFile(k)
		if err != nil {
			return err
		}
		pems = append(pems, b)
	}
	tr, err := payload.NewTrustRoot(pems, *threshold, *floor)
	if err != nil {
		return err
	}
	for _, r := range revoked {
		tr.Revoke(r)
	}
	if err := tr.Save(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, "wrote %s: %d key(s), threshold %d, floor %d\n", *out, len(tr.Keys), tr.Threshold, tr.SecurityFloor)
	return nil
}

// parseChunking parses "rabin" (default), "rabin:MIN:AVGBITS:MAX" or "fixed:SIZE" (sizes in bytes
// or with K/M suffix).
func parseChunking(s string) (payload.Chunking, error) {
	parts := strings.Split(s, ":")
	switch {
	case s == "" || s == "rabin":
		return payload.DefaultChunking, nil
	case parts[0] == "fixed" && len(parts) == 2:
		n, err := parseSize(parts[1])
		return payload.FixedChunking(int(n)), err
	case parts[0] == "rabin" && len(parts) == 4:
		mn, err1 := parseSize(parts[1])
		bits, err2 := strconv.Atoi(parts[2])
		mx, err3 := parseSize(parts[3])
		if err := errors.Join(err1, err2, err3); err != nil {
			return payload.Chunking{}, err
		}
		return payload.Chunking{Algorithm: payload.ChunkingRabin, Min: int(mn), Max: int(mx), AverageBits: bits, Polynomial: payload.DefaultPolynomial}, nil
	}
	return payload.Chunking{}, fmt.Errorf("chunking %q: want rabin, rabin:MIN:AVGBITS:MAX or fixed:SIZE", s)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func (c *cmd) build(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload build", "--image usr.img --version V --board B --security-version N [--app ID] -o p.tsp",
		"Builds an unsigned payload from a /usr image: content-defined chunks, zstd, a manifest.\nSign it afterwards with 'payload sign'.")
	image := fs.String("image", "", "the /usr image file")
	version := fs.String("version", "", "the image's version")
	board := fs.String("board", "", "board, e.g. amd64-usr")
	secver := fs.Uint64("security-version", 0, "security version (hosts refuse payloads below their floor)")
	app := fs.String("app", payload.DefaultAppID, "Omaha app id")
	chunking := fs.String("chunking", "rabin", "rabin (default), rabin:MIN:AVGBITS:MAX or fixed:SIZE")
	level := fs.String("level", "", "zstd level: fastest, default, better or best (default: the library's default)")
	area := fs.Int("envelope-area", 0, "bytes reserved for the signed envelope (default: the library's default)")
	out := fs.String("o", "", "output payload file")
	deltaLevel := fs.String("delta-level", "", "zstd level of the delta sections: fastest, default, better or best (default: best)")
	var deltaFrom multiFlag
	fs.Var(&deltaFrom, "delta-from", "an older /usr `image` (OLD.img, or OLD.img=VERSION) to add a delta section for, so that hosts running it\n"+
		"fetch only that section; repeat it for the last few releases. VERSION defaults to the image's os-release VERSION_ID")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if *image == "" || *version == "" || *board == "" || *out == "" {
		return cli.Usagef("--image, --version, --board and -o are required")
	}
	ch, err := parseChunking(*chunking)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	lvl, err := parseLevel("level", *level)
	if err != nil {
		return err
	}
	dlvl, err := parseLevel("delta-level", *deltaLevel)
	if err != nil {
		return err
	}
	f, err := os.Open(*image)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	bases, closeBases, err := openDeltaBases(deltaFrom)
	if err != nil {
		return err
	}
	defer closeBases()
	bar := progress.New(stdio.Stderr, cli.IsTerminal(stdio.Stderr), "build", st.Size(), c.env.Now)
	m, err := payload.Build(ctx, f, st.Size(), payload.BuildOptions{
		AppID: *app, Board: *board, Version: *version, SecurityVersion: *secver, Created: c.env.Now(),
		Chunking: ch, Level: lvl, EnvelopeArea: *area, Progress: func(done, _ int64) { bar.Set(done, "") },
		DeltaFrom: bases, DeltaLevel: dlvl,
	}, *out)
	if err != nil {
		return err
	}
	bar.Finish()
	fst, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, "wrote %s (unsigned): version %s, board %s, security version %d\n", *out, m.Version, m.Board, m.SecurityVersion)
	fmt.Fprintf(stdio.Stdout, "image %s in %d chunks, payload %s (%.1f%% of the image)\nsign it: payload sign --key NAME.key %s\n",
		progress.Bytes(m.ImageSize), m.ChunkCount, progress.Bytes(fst.Size()), 100*float64(fst.Size())/float64(m.ImageSize), *out)
	for _, d := range m.Deltas {
		fmt.Fprintf(stdio.Stdout, "delta section from %s: %d ops, %s\n", d.BaseVersion, d.OpCount, progress.Bytes(d.Length))
	}
	return nil
}

// parseLevel parses the zstd level of flag name ("" is the library's default, 0).
func parseLevel(name, v string) (zstd.EncoderLevel, error) {
	if v == "" {
		return 0, nil
	}
	ok, lvl := zstd.EncoderLevelFromString(v)
	if !ok {
		return 0, cli.Usagef("--%s %q: want fastest, default, better or best", name, v)
	}
	return lvl, nil
}

// openDeltaBases opens the --delta-from images (OLD.img or OLD.img=VERSION; the version is
// read from the image's os-release when not given). On an error it closes what it opened.
func openDeltaBases(args []string) (bases []payload.DeltaBase, closeAll func(), err error) {
	var files []*os.File
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
	}
	// Not closeAll: every error return sets that named result to nil.
	defer func() {
		if err != nil {
			closeFiles()
		}
	}()
	for _, a := range args {
		path, version, _ := strings.Cut(a, "=")
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--delta-from: %w", err)
		}
		files = append(files, f)
		st, err := f.Stat()
		if err != nil {
			return nil, nil, fmt.Errorf("--delta-from: %w", err)
		}
		if version == "" {
			rel, err := slotrelease.Read(f, st.Size())
			if err != nil {
				return nil, nil, cli.Usagef("--delta-from %s: no version given and none readable in the image (%v); pass %s=VERSION", path, err, path)
			}
			version = rel.Version
		}
		bases = append(bases, payload.DeltaBase{Image: f, Size: st.Size(), Version: version})
	}
	return bases, closeFiles, nil
}

func (c *cmd) sign(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload sign", "--key NAME.key|KMS-URI p.tsp", `Adds a signature by the key to the payload (replacing an earlier one by the same key).
A key that looks like a URI (awskms://…, gcpkms://…, hashivault://…) is a sigstore KMS key: it
is used through a provider linked into this binary or a sigstore-kms-<provider> plugin on PATH.
A symbolic link is followed: the payload it points at is signed and the link kept.`)
	key := fs.String("key", "", "private key file, or a sigstore KMS key URI")
	arg, err := parseOne(fs, args, "payload file")
	if err != nil {
		return err
	}
	if *key == "" {
		return cli.Usagef("--key is required")
	}
	var s signature.Signer
	if strings.Contains(*key, "://") {
		s, err = kms.Get(ctx, *key, crypto.SHA256)
	} else {
		s, err = payload.LoadSignerFile(*key, nil)
	}
	if err != nil {
		return fmt.Errorf("signing key %s: %w", *key, err)
	}
	// payload.Sign replaces the file at the path it is given (temporary file, rename): given a
	// symbolic link it would replace the link with a signed copy and leave the payload the link
	// points at unsigned. Sign that payload and keep the link.
	path, err := filepath.EvalSymlinks(arg)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if err := payload.Sign(ctx, path, s, ""); err != nil {
		return err
	}
	f, err := payload.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(stdio.Stdout, "signed %s; signatures by %s\n", arg, strings.Join(f.KeyIDs(), ", "))
	return nil
}

// manifestJSON is the --json shape of a manifest.
type manifestJSON struct {
	*payload.Manifest
	Verified   bool     `json:"verified"`
	Signatures []string `json:"signatures"`
	FileSize   int64    `json:"fileSize"`
	// Encodings counts chunks by encoding; absent when the chunk table was not read (inspect
	// reads only the manifest).
	Encodings *encodingCounts `json:"encodings,omitempty"`
}

type encodingCounts struct {
	Zero, Raw, Zstd int
}

func describe(m *payload.Manifest, f *payload.File, verified bool) manifestJSON {
	j := manifestJSON{Manifest: m, Verified: verified, Signatures: f.KeyIDs(), FileSize: f.Size()}
	if m.Chunks != nil {
		j.Encodings = &encodingCounts{}
	}
	for _, c := range m.Chunks {
		switch c.Encoding {
		case payload.EncodingZero:
			j.Encodings.Zero++
		case payload.EncodingRaw:
			j.Encodings.Raw++
		case payload.EncodingZstd:
			j.Encodings.Zstd++
		}
	}
	return j
}

func printManifest(w io.Writer, j manifestJSON) {
	t := cli.Table(w)
	status := "VERIFIED"
	if !j.Verified {
		status = "UNVERIFIED (signatures not checked; use 'payload verify')"
	}
	fmt.Fprintf(t, "status\t%s\n", status)
	fmt.Fprintf(t, "app id\t%s\n", j.AppID)
	fmt.Fprintf(t, "board\t%s\n", j.Board)
	fmt.Fprintf(t, "version\t%s\n", j.Version)
	fmt.Fprintf(t, "security version\t%d\n", j.SecurityVersion)
	fmt.Fprintf(t, "created\t%s\n", j.Created.Format(time.RFC3339))
	fmt.Fprintf(t, "image\t%s (%d bytes), sha256 %s\n", progress.Bytes(j.ImageSize), j.ImageSize, j.ImageSHA256)
	ch := j.Chunking
	switch ch.Algorithm {
	case payload.ChunkingFixed:
		fmt.Fprintf(t, "chunking\tfixed %s\n", progress.Bytes(int64(ch.Size)))
	default:
		fmt.Fprintf(t, "chunking\t%s min %s avg ~%s max %s\n", ch.Algorithm, progress.Bytes(int64(ch.Min)), progress.Bytes(1<<ch.AverageBits), progress.Bytes(int64(ch.Max)))
	}
	if j.Chunks != nil {
		fmt.Fprintf(t, "chunks\t%d (zstd %d, raw %d, zero %d)\n", j.ChunkCount, j.Encodings.Zstd, j.Encodings.Raw, j.Encodings.Zero)
	} else {
		fmt.Fprintf(t, "chunks\t%d\n", j.ChunkCount)
	}
	fmt.Fprintf(t, "payload\t%s (data %s)\n", progress.Bytes(j.FileSize), progress.Bytes(j.DataSize))
	for _, d := range j.Deltas {
		fmt.Fprintf(t, "delta from %s\t%d ops, %s (base %s, sha256 %s)\n", d.BaseVersion, d.OpCount, progress.Bytes(d.Length),
			progress.Bytes(d.BaseSize), d.BaseSHA256)
	}
	if len(j.Signatures) == 0 {
		fmt.Fprintf(t, "signatures\tnone\n")
	}
	for i, s := range j.Signatures {
		fmt.Fprintf(t, "signature %d\tkey %s\n", i+1, s)
	}
	t.Flush()
}

func (c *cmd) verify(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload verify", "--trust trust.json [--app ID] [--board B] [--floor N] [--json] p.tsp",
		"Verifies signatures, threshold, revocations, app, board, security floor and the chunk table.\nExit 0 when the payload is acceptable, 1 with the reason when it is not.")
	trustPath := fs.String("trust", "", "trust root file")
	app := fs.String("app", "", "required app id (default: any)")
	board := fs.String("board", "", "required board (default: any)")
	floor := fs.Uint64("floor", 0, "required minimum security version (besides the trust root's)")
	asJSON := fs.Bool("json", false, "print the verified manifest as JSON")
	arg, err := parseOne(fs, args, "payload file")
	if err != nil {
		return err
	}
	tr, err := loadTrust(*trustPath)
	if err != nil {
		return err
	}
	f, err := payload.OpenFile(arg)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := f.Verify(tr, payload.Expect{AppID: *app, Board: *board, Floor: *floor})
	if err != nil {
		return err
	}
	return show(stdio.Stdout, describe(m, f, true), *asJSON, "OK: "+arg+" is a valid payload\n")
}

// show prints a described manifest as JSON or as a table after head.
func show(w io.Writer, j manifestJSON, asJSON bool, head string) error {
	if asJSON {
		return cli.PrintJSON(w, j)
	}
	io.WriteString(w, head)
	printManifest(w, j)
	return nil
}

func (c *cmd) inspect(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload inspect", "[--json] p.tsp", "Shows what a payload says about itself. Nothing is verified: use 'payload verify' before trusting it.")
	asJSON := fs.Bool("json", false, "print JSON")
	arg, err := parseOne(fs, args, "payload file")
	if err != nil {
		return err
	}
	f, err := payload.OpenFile(arg)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := f.Unverified()
	if err != nil {
		return err
	}
	return show(stdio.Stdout, describe(m, f, false), *asJSON, "")
}
