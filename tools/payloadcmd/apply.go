package payloadcmd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/esp"
	"github.com/twinslot/twinslot/partition/slotrelease"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/tools/progress"
)

// hostReleasePath is the running image's os-release on a live host.
const hostReleasePath = "usr/lib/os-release"

// applyResult is the --json output of apply.
type applyResult struct {
	Version       string  `json:"version"`
	Board         string  `json:"board"`
	Disk          string  `json:"disk"`
	Active        string  `json:"active"`
	Target        string  `json:"target"`
	ESP           string  `json:"esp,omitempty"` // the ESP directory the new kernel and initrd went to
	ImageBytes    int64   `json:"imageBytes"`
	ReusedTarget  int64   `json:"reusedTargetBytes"`
	ReusedActive  int64   `json:"reusedActiveBytes"`
	ZeroBytes     int64   `json:"zeroBytes"`
	FetchedBytes  int64   `json:"fetchedBytes"`
	MetadataBytes int64   `json:"metadataBytes"`
	WrittenBytes  int64   `json:"writtenBytes"`
	Requests      int     `json:"requests"`
	Seconds       float64 `json:"seconds"`
	// Phases is the seconds each phase of the install took (verify, scan-target, index-active,
	// fetch, rehash, sync): where an install's time goes.
	Phases map[string]float64 `json:"phases"`
	// Delta is the base version whose delta section was installed ("" for the chunk path);
	// DeltaFallback why a delta section was abandoned for the chunk path.
	Delta         string `json:"delta,omitempty"`
	DeltaFallback string `json:"deltaFallback,omitempty"`
	// GPTWarnings: GPT writes that failed part-way but took effect (the flip, say: the new slot
	// boots next all the same), each with whether the stale copy could be repaired.
	GPTWarnings []string `json:"gptWarnings,omitempty"`
}

// gptWriter is what apply changes the GPT through: *partition.Disk.
type gptWriter interface {
	BeginInstall(partition.Slot) error
	PrepareInstall(partition.Slot) error
	Repair() (bool, error)
}

// gptOf is what apply changes the GPT of d through.
func (env Env) gptOf(d *partition.Disk) gptWriter {
	if env.gpt != nil {
		return env.gpt(d)
	}
	return d
}

// inEffect returns err unless it says that a GPT change took effect although a write failed
// part-way (partition.ErrWriteApplied): the disk reads the new table and GRUB boots by it, so
// the change is done. It then tries to repair the stale copy and returns, as a warning, what
// happened and what is left to do.
func inEffect(g gptWriter, err error) (warning string, _ error) {
	if !errors.Is(err, partition.ErrWriteApplied) {
		return "", err
	}
	switch repaired, rerr := g.Repair(); {
	case rerr != nil:
		return fmt.Sprintf("%v. Repairing the GPT failed too (%v): once the disk is checked, run 'updatectl slots --repair' (the next change of the slots also repairs it)", err, rerr), nil
	case repaired:
		return fmt.Sprintf("%v. The stale GPT copy has been repaired since", err), nil
	}
	return err.Error(), nil
}

func (c *cmd) apply(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("payload apply", "--trust trust.json [--disk disk.img] [--esp DIR] [--app ID] [--json] p.tsp|URL",
		`Verifies the payload, installs its image into the inactive /usr slot (reusing what the slots
already hold, fetching the rest with HTTP Range requests for a URL), re-hashes the slot and marks
it to be tried on the next boot (partition PrepareInstall).

The active slot is the booted one on a live host (no --disk). With --disk (an image file or a
device that is not running) the active slot is the successful slot with the highest priority
(ties: the lower partition number). A payload for another board than the active slot's BOARD
(from its lib/os-release) is refused. Nothing is written before the payload verified.

When the ESP directory has the kernel-per-slot layout (DIR/twinslot/), the new slot's
/usr/boot/vmlinuz and /usr/boot/initrd.img are copied to DIR/twinslot/vmlinuz-a|b and
initrd-a|b before the flip; if that fails (no kernel in the image, ESP full or read-only),
the slot is not made the next boot. The ESP is /boot when installing to the booted disk,
none with --disk unless --esp is given.

A GPT write that fails part-way is an error, unless the change took effect all the same
(the disk reads the new table, GRUB boots by it): then apply succeeds with a warning on
stderr (gptWarnings in --json) and repairs the stale GPT copy, or says to run
'updatectl slots --repair' when that fails too.`)
	trustPath := fs.String("trust", "", "trust root file")
	disk := fs.String("disk", "", "disk image or device to install into (default: the disk holding the booted /usr)")
	espFlag := fs.String("esp", "", "the ESP mount point `DIR` (default: /boot on a live host, none with --disk)")
	app := fs.String("app", payload.DefaultAppID, "required app id")
	floor := fs.Uint64("floor", 0, "lowest security version accepted (besides the trust root's)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	noDelta := fs.Bool("no-delta", false, "ignore the payload's delta sections: reuse and fetch by chunks only")
	arg, err := parseOne(fs, args, "payload file or URL")
	if err != nil {
		return err
	}
	tr, err := loadTrust(*trustPath)
	if err != nil {
		return err
	}
	espDir := *espFlag
	if espDir != "" && !esp.Present(espDir) {
		return cli.Usagef("--esp %s: %s is not a directory; give the ESP's mount point, or leave --esp out on a host that does not boot a kernel per slot", espDir, filepath.Join(espDir, esp.Subdir))
	}
	if espDir == "" && *disk == "" && esp.Present(c.env.ESPDir) {
		espDir = c.env.ESPDir
	}

	// Find the disk and the active slot: the rule updated and updatectl share (partition.FindDisk);
	// on an image that is not running, the committed slot.
	if *disk == "" && c.env.Host == nil {
		return cli.Usagef("--disk is required (no host filesystem to find the booted /usr)")
	}
	w, err := partition.FindDisk(c.env.Host, *disk)
	if err != nil {
		return fmt.Errorf("find the disk of the booted /usr (or pass --disk): %w", err)
	}
	diskPath := w.Disk
	d, err := partition.Open(diskPath)
	if err != nil {
		return err
	}
	defer d.Close()
	active, booted, err := w.Active(d)
	if err != nil {
		return err
	}
	target, err := d.Other(active)
	if err != nil {
		return err
	}
	rel, err := c.activeRelease(d, active, booted && *disk == "")
	if err != nil {
		return err
	}

	src, closeSrc, err := openSource(arg)
	if err != nil {
		return err
	}
	defer closeSrc()

	tty := cli.IsTerminal(stdio.Stderr)
	var bar *progress.Bar
	var gptWarnings []string
	g := c.env.gptOf(d)
	// A GPT change that took effect although its write failed is done: go on, and warn.
	applied := func(err error) error {
		w, err := inEffect(g, err)
		if w != "" {
			gptWarnings = append(gptWarnings, w)
		}
		return err
	}
	slot := d.SlotIO(target)
	start := c.env.Now()
	res, err := payload.Install(ctx, src, payload.Target{
		Slot: slot, Size: target.Size,
		Active: d.SlotReader(active), ActiveSize: active.Size, ActiveVersion: rel.Version,
	}, payload.InstallOptions{
		NoDelta: *noDelta,
		Trust:   tr,
		Expect:  payload.Expect{AppID: *app, Board: rel.Board, Floor: *floor},
		Now:     c.env.Now,
		// Only when bytes are really about to change: make the slot unbootable first, so that a
		// half-written slot is never booted or rolled back into.
		BeforeWrite: func() error { return applied(g.BeginInstall(target)) },
		Progress: func(p payload.Progress) {
			if p.Total == 0 {
				return
			}
			if bar == nil {
				bar = progress.New(stdio.Stderr, tty, "apply", p.Total, c.env.Now)
			}
			bar.Set(p.Done, fmt.Sprintf("%s reused %s fetched %s", p.Phase, progress.Bytes(p.Reused), progress.Bytes(p.Fetched)))
		},
	})
	if err != nil {
		return fmt.Errorf("apply to %s of %s: %w", target.Label, diskPath, err)
	}
	if bar != nil {
		bar.Finish()
	}
	if err := d.Sync(); err != nil {
		return err
	}
	if espDir != "" {
		if target, err = d.SlotByNumber(target.Number); err != nil { // the bits as they are now
			return err
		}
		if err := esp.InstallDisk(ctx, espDir, d, target); err != nil {
			return fmt.Errorf("%w; %s is not made the next boot", err, target.Label)
		}
	}
	if err := applied(g.PrepareInstall(target)); err != nil {
		return err
	}
	for _, w := range gptWarnings {
		fmt.Fprintf(stdio.Stderr, "payload apply: warning: a GPT write failed, but the change is in effect: %s\n", w)
	}
	out := applyResult{
		Version: res.Manifest.Version, Board: res.Manifest.Board, Disk: diskPath, Active: active.Label, Target: target.Label, ESP: espDir,
		ImageBytes: res.Manifest.ImageSize, ReusedTarget: res.BytesReusedTarget, ReusedActive: res.BytesReusedActive,
		ZeroBytes: res.BytesZero, FetchedBytes: res.BytesFetched, MetadataBytes: res.BytesMetadata,
		WrittenBytes: res.BytesWritten, Requests: res.Requests, Seconds: c.env.Now().Sub(start).Seconds(),
		Phases: map[string]float64{}, Delta: res.DeltaBase, DeltaFallback: res.DeltaFallback, GPTWarnings: gptWarnings,
	}
	for p, d := range res.Phases {
		out.Phases[p] = d.Seconds()
	}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, out)
	}
	fmt.Fprintf(stdio.Stdout, "installed %s (%s) into %s of %s; %s boots next with one try, %s stays the fallback\n",
		out.Version, out.Board, target.Label, diskPath, target.Label, active.Label)
	if espDir != "" {
		l, _ := esp.Letter(target)
		fmt.Fprintf(stdio.Stdout, "its kernel and initrd are %s/vmlinuz-%s and initrd-%s\n", filepath.Join(espDir, esp.Subdir), l, l)
	}
	fmt.Fprintf(stdio.Stdout, "reused %s (%s already in %s, %s from %s, %s zero), fetched %s in %d requests, wrote %s, %.1fs\n",
		progress.Bytes(res.BytesReused()+res.BytesZero), progress.Bytes(res.BytesReusedTarget), target.Label,
		progress.Bytes(res.BytesReusedActive), active.Label, progress.Bytes(res.BytesZero),
		progress.Bytes(res.BytesFetched+res.BytesMetadata), res.Requests, progress.Bytes(res.BytesWritten), out.Seconds)
	return nil
}

// activeRelease reads the running image's release: /usr/lib/os-release on a live host, else the
// os-release inside the active slot's filesystem.
func (c *cmd) activeRelease(d *partition.Disk, active partition.Slot, live bool) (slotrelease.Release, error) {
	if live {
		b, err := fs.ReadFile(c.env.Host, hostReleasePath)
		if err != nil {
			return slotrelease.Release{}, fmt.Errorf("read the running image's BOARD: %w", err)
		}
		rel, err := slotrelease.FromOSRelease(b)
		if err != nil {
			return slotrelease.Release{}, fmt.Errorf("/%s: %w", hostReleasePath, err)
		}
		return rel, nil
	}
	rel, err := slotrelease.Read(d.SlotReader(active), active.Size)
	if err != nil {
		return slotrelease.Release{}, fmt.Errorf("read BOARD of the active slot %s: %w", active.Label, err)
	}
	return rel, nil
}

// openSource opens a payload file or URL.
func openSource(arg string) (payload.Source, func(), error) {
	if strings.HasPrefix(arg, "http://") || strings.HasPrefix(arg, "https://") {
		client := &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
		}}
		return payload.FromURL(arg, client), func() { client.CloseIdleConnections() }, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return payload.Source{}, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return payload.Source{}, nil, err
	}
	return payload.FromFile(f, st.Size()), func() { f.Close() }, nil
}
