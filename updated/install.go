package updated

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/esp"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/updated/updateconf"
)

func (a *Agent) openDisk() (*partition.Disk, partition.Slot, error) {
	d, err := a.h.Disk.OpenDisk()
	if err != nil {
		return nil, partition.Slot{}, err
	}
	booted, err := d.SlotByLabel(a.booted.Label)
	if err != nil {
		d.Close()
		return nil, partition.Slot{}, err
	}
	return d, booted, nil
}

// gptWriter is what the agent changes the GPT through: *partition.Disk.
type gptWriter interface {
	BeginInstall(partition.Slot) error
	PrepareInstall(partition.Slot) error
	MarkGood(partition.Slot) error
	MarkBad(partition.Slot) error
	Rollback(active partition.Slot) (partition.Slot, error)
	Repair() (bool, error)
}

// gpt is what the agent changes the GPT of d through.
func (a *Agent) gpt(d *partition.Disk) gptWriter {
	if a.c.gpt != nil {
		return a.c.gpt(d)
	}
	return d
}

// inEffect returns err unless it says that a GPT change took effect although a write failed
// part-way (partition.ErrWriteApplied): the disk reads the new table and GRUB boots by it, so
// the change is done, and reporting it as failed would misstate what the host boots next. It
// logs the error as a warning and tries to repair the stale copy at once; a failed repair is
// logged, not fatal (the next change repairs it too).
func (a *Agent) inEffect(g gptWriter, change string, err error) error {
	if !errors.Is(err, partition.ErrWriteApplied) {
		return err
	}
	a.log.Warn("a GPT write failed, but the change is in effect; going on", "change", change, "error", err)
	switch repaired, rerr := g.Repair(); {
	case rerr != nil:
		a.log.Error("could not repair the GPT after the failed write; the next change repairs it, or run 'updatectl slots --repair'",
			"error", rerr)
	case repaired:
		a.log.Info("repaired the GPT after the failed write")
	}
	return nil
}

// target is the slot to write: the partner of the booted slot, which must be committed (so
// that whatever happens to the target, the booted slot still boots).
func (a *Agent) target(d *partition.Disk, booted partition.Slot) (partition.Slot, error) {
	if !booted.Attr.Successful() || booted.Attr.Priority() == 0 {
		return partition.Slot{}, fmt.Errorf("the running slot %s is not committed (%v); refusing to write its partner", booted.Label, booted.Attr)
	}
	return d.Other(booted)
}

func (a *Agent) startDownload(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	t, err := a.target(d, booted)
	d.Close()
	if err != nil {
		return failed(CodeUnsafeBootState, "%v", err), nil
	}
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateDownloadStarted, Result: omaha.EventResultSuccess})
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	return Event{Kind: EvDownloadStarted, Target: t.Label}, nil
}

// trustRoot loads the first trust root file that exists.
func (a *Agent) trustRoot() (*payload.TrustRoot, string, error) {
	for _, p := range a.h.Paths.TrustRoots {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		t, err := payload.LoadTrustRoot(p)
		if err != nil {
			return nil, p, err
		}
		return t, p, nil
	}
	return nil, "", fmt.Errorf("no trust root in %v: the host cannot verify payloads and refuses to install any", a.h.Paths.TrustRoots)
}

func (a *Agent) download(ctx context.Context, r Record) (Event, error) {
	att := r.Attempt
	if a.release.Board == "" {
		return failed(CodeWrongPayload, "the running /usr names no BOARD in its os-release, so the payload's board cannot be checked; refusing to install"), nil
	}
	trust, trustPath, err := a.trustRoot()
	if err != nil {
		return failed(CodePubKeyVerificationError, "%v", err), nil
	}
	fl, err := a.floor.Get(ctx)
	if err != nil {
		return failed(CodeBelowSecurityFloor, "read the security floor: %v", err), nil
	}
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	defer d.Close()
	t, err := a.target(d, booted)
	if err != nil {
		return failed(CodeUnsafeBootState, "%v", err), nil
	}
	if t.Label != att.TargetSlot {
		return failed(CodeUnsafeBootState, "the slot to write is now %s, not %s as when the download started", t.Label, att.TargetSlot), nil
	}
	cfg, _ := a.conf()
	o := a.c.Install
	o.Trust = trust
	o.Expect = payload.Expect{AppID: a.c.AppID, Board: a.release.Board, Floor: fl}
	o.Logger = a.log
	o.Now = a.clk.Now
	g := a.gpt(d)
	var begun atomic.Bool
	o.BeforeWrite = func() error {
		begun.Store(true)
		return a.inEffect(g, "begin install into "+t.Label, g.BeginInstall(t))
	}
	o.Progress = func(p payload.Progress) {
		if p.Total > 0 {
			a.setProgress(float64(p.Done) / float64(p.Total))
		}
	}
	dst := payload.Target{
		Slot: d.SlotIO(t), Size: t.Size,
		Active: d.SlotReader(booted), ActiveSize: booted.Size,
		// The booted slot runs this version: a payload's delta section from it is all to fetch.
		ActiveVersion: a.release.Version,
	}
	a.log.Info("installing", "version", att.ToVersion, "target", t.Label, "trust_root", trustPath, "floor", fl)
	var res *payload.Result
	var lastErr error
	for _, u := range att.Offer.URLs {
		res, lastErr = payload.Install(ctx, payload.FromURL(u, a.downloadClient(cfg)), dst, o)
		if lastErr == nil || ctx.Err() != nil {
			break
		}
		a.log.Warn("install from this URL failed", "url", u, "error", lastErr)
	}
	if ctx.Err() != nil {
		return Event{}, errStop // resumed after the restart: the payload reuses what is written
	}
	if lastErr == nil && !begun.Load() {
		// Nothing was written: the slot already held the image (a version installed before, say
		// one whose boot failed). Clear its bits all the same, so that until FINALIZING makes it
		// the next boot they say nothing about this attempt: Resume takes a slot with priority,
		// no tries left and not successful for one that was tried and failed.
		lastErr = a.inEffect(g, "begin install into "+t.Label, g.BeginInstall(t))
	}
	if lastErr != nil {
		return failed(installCode(lastErr), "%v", lastErr), nil
	}
	m := res.Manifest
	if m.Version != att.ToVersion {
		// The slot holds a validly signed image, but not the one offered: never boot it.
		return failed(CodeWrongPayload, "the payload is version %s but the server offered %s; the slot is left unbootable", m.Version, att.ToVersion), nil
	}
	a.log.Info("installed", "version", m.Version, "target", t.Label, "reused", res.BytesReused(),
		"fetched", res.BytesFetched, "written", res.BytesWritten, "took", res.Duration.Round(time.Millisecond))
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateDownloadFinished, Result: omaha.EventResultSuccess})
	return Event{Kind: EvDownloaded, Image: &Image{
		Version: m.Version, SecurityVersion: m.SecurityVersion, SHA256: m.ImageSHA256.String(),
		Size: m.ImageSize, BytesReused: res.BytesReused(), BytesFetched: res.BytesFetched,
	}}, nil
}

// downloadClient adds DOWNLOAD_USER/DOWNLOAD_PASSWORD basic auth to payload requests.
func (a *Agent) downloadClient(c *updateconf.Config) *http.Client {
	base := a.h.HTTP
	if c == nil || c.DownloadUser == "" {
		return base
	}
	hc := &http.Client{}
	if base != nil {
		*hc = *base
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	hc.Transport = basicAuth{rt: rt, user: c.DownloadUser, pass: c.DownloadPassword}
	return hc
}

type basicAuth struct {
	rt         http.RoundTripper
	user, pass string
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.pass)
	return b.rt.RoundTrip(r)
}

func (a *Agent) finalize(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return failed(CodeInstallDeviceOpenError, "open the disk: %v", err), nil
	}
	defer d.Close()
	t, err := d.SlotByLabel(r.Attempt.TargetSlot)
	if err != nil || t.Number == booted.Number {
		return failed(CodeUnsafeBootState, "target slot %s: not usable (booted %s): %v", r.Attempt.TargetSlot, booted.Label, err), nil
	}
	if err := a.installKernel(ctx, d, t); err != nil {
		if ctx.Err() != nil {
			return Event{}, errStop
		}
		return failed(CodeKernelInstall, "%v; %s is not made the next boot", err, t.Label), nil
	}
	g := a.gpt(d)
	if err := a.inEffect(g, "make "+t.Label+" the next boot", g.PrepareInstall(t)); err != nil {
		return failed(CodePostinstallRunnerError, "make %s the next boot: %v", t.Label, err), nil
	}
	a.log.Info("the new slot boots next", "slot", t.Label, "version", r.Attempt.ToVersion)
	a.event(ctx, r, omaha.Event{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccess})
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	return Event{Kind: EvInstalled}, nil
}

// installKernel copies the kernel and initrd of the new slot t to its letter's files on the
// ESP, when the host boots from the ESP layout (partition/esp); elsewhere it does nothing.
func (a *Agent) installKernel(ctx context.Context, d *partition.Disk, t partition.Slot) error {
	dir := a.h.Paths.ESPDir
	if !esp.Present(dir) {
		return nil
	}
	if err := esp.InstallDisk(ctx, dir, d, t); err != nil {
		return err
	}
	a.log.Info("installed the new slot's kernel and initrd on the ESP", "dir", dir, "slot", t.Label)
	return nil
}

func (a *Agent) needReboot(ctx context.Context, r Record) (Event, error) {
	for {
		d := a.c.Schedule.NextCheck(0, a.poll, a.rnd)
		i, err := a.wait(ctx, d, a.reset, a.trigger)
		if err != nil {
			return Event{}, err
		}
		switch i {
		case 0:
			return Event{Kind: EvReset}, nil
		case 1:
			continue // AttemptUpdate is a no-op until the reboot
		}
		// A ping-only request keeps the server's count of active hosts right.
		c, err := a.conf()
		if err != nil || c.Disabled() || len(servers(c)) == 0 {
			continue
		}
		cl, err := a.client(c)
		if err == nil {
			err = cl.Ping(ctx, a.identity(c, r))
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("ping failed", "error", err)
		}
	}
}

func (a *Agent) undoInstall(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return Event{}, fmt.Errorf("updated: reset: open the disk: %w", err)
	}
	t, err := d.SlotByLabel(r.Attempt.TargetSlot)
	onTrial := err == nil && t.Number == booted.Number
	if err == nil && t.Attr.Priority() > 0 {
		g := a.gpt(d)
		if err := a.inEffect(g, "mark "+t.Label+" bad", g.MarkBad(t)); err != nil {
			d.Close()
			return Event{}, fmt.Errorf("updated: reset: %w", err)
		}
		a.log.Info("cancelled the installed update; the old slot boots next", "cancelled_slot", t.Label)
	}
	d.Close()
	if onTrial {
		// A power loss before the reset marked the slot bad booted it (Resume): the reset ends
		// on the old slot, after this reboot.
		a.log.Warn("booted the slot of a cancelled update; rebooting into the old slot", "cancelled_slot", t.Label)
		return a.rebootNow(ctx)
	}
	return Event{Kind: EvResetDone}, nil
}
