package updated

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/atomicfile"
	"github.com/twinslot/twinslot/updated/floor"
	"github.com/twinslot/twinslot/updated/health"
)

// Keys of update.conf that configure the health gate (twinslot's own).
const (
	// ConfHealthURLs: URLs (space separated) that must answer 2xx for the gate to pass.
	ConfHealthURLs = "HEALTH_URLS"
	// ConfHealthTimeout: the gate's deadline, a Go duration such as 5m.
	ConfHealthTimeout = "HEALTH_TIMEOUT"
)

// gate builds the health gate for the booted slot from the host and update.conf.
func (a *Agent) gate(r Record) (*health.Gate, error) {
	g := &health.Gate{
		System: a.h.System, Dir: a.h.Paths.HealthDir, Deadline: a.c.HealthDeadline, Retry: a.c.HealthRetry,
		Clock: a.clk, Logger: a.log.With("health_gate", r.Boot.Slot), Used: a.gateUsed(r),
		Env: []string{"TWINSLOT_VERSION=" + r.Boot.BootedVersion, "TWINSLOT_PREVIOUS_VERSION=" + r.Boot.PreviousVersion,
			"TWINSLOT_SLOT=" + r.Boot.Slot},
	}
	c, err := a.conf()
	if err != nil {
		return g, err
	}
	g.URLs = strings.Fields(c.Values[ConfHealthURLs])
	if v := c.Values[ConfHealthTimeout]; v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return g, fmt.Errorf("update.conf %s=%q: %w", ConfHealthTimeout, v, err)
		}
		g.Deadline = d
	}
	return g, nil
}

// gateUsed is how much of its deadline the health gate of r's boot used before this run: the
// uptime since it started (Record.GateUptime), 0 when it has no start.
func (a *Agent) gateUsed(r Record) time.Duration {
	if r.GateUptime <= 0 {
		return 0
	}
	return max(a.h.Uptime()-r.GateUptime, 0)
}

func (a *Agent) verify(ctx context.Context, r Record) (Event, error) {
	g, err := a.gate(r)
	if err != nil {
		// A broken configuration must not commit an unchecked slot: fail the gate.
		return Event{Kind: EvUnhealthy, Failure: &Failure{Code: CodeHealthGateFailed, Message: "health gate misconfigured: " + err.Error()}}, nil
	}
	a.log.Info("health gate running", "slot", r.Boot.Slot, "version", r.Boot.BootedVersion, "checks_dir", g.Dir, "urls", g.URLs,
		"already_used", g.Used)
	res := g.Run(ctx)
	if ctx.Err() != nil {
		return Event{}, errStop // re-run after the restart
	}
	if res.Passed {
		a.log.Info(res.Summary())
		return Event{Kind: EvHealthy}, nil
	}
	a.log.Error(res.Summary())
	return Event{Kind: EvUnhealthy, Failure: &Failure{Code: CodeHealthGateFailed, Message: res.Summary()}}, nil
}

func (a *Agent) commit(ctx context.Context, r Record) (Event, error) {
	d, booted, err := a.openDisk()
	if err != nil {
		return Event{}, fmt.Errorf("updated: commit: open the disk: %w", err)
	}
	g := a.gpt(d)
	err = a.inEffect(g, "mark "+booted.Label+" good", g.MarkGood(booted))
	d.Close()
	if err != nil {
		return Event{}, fmt.Errorf("updated: commit %s: %w", booted.Label, err)
	}
	switch {
	case r.Boot.State == BootRolledBack:
		a.log.Error("rolled back: the new version failed; the previous version runs and is committed",
			"failed_version", r.Boot.PreviousVersion, "running", r.Boot.BootedVersion, "slot", booted.Label)
	case r.Failure != nil:
		a.log.Error("kept an unhealthy slot: no other slot can boot", "slot", booted.Label, "error", r.Failure.Message)
	default:
		a.log.Info("committed", "slot", booted.Label, "version", r.Boot.BootedVersion)
	}
	if r.Failure == nil && r.Boot.State != BootRolledBack {
		a.commitHousekeeping(ctx, r)
	} else {
		a.measure(ctx, r)
	}
	return Event{Kind: EvCommitted}, nil
}

// commitHousekeeping runs on a committed boot: advance the floor to the booted image's security
// version (only ever after its health gate passed: never for an image kept unhealthy) and
// measure it into the PCR, once per boot. Failures are logged, not fatal: the slot is committed
// either way, and the next start retries.
func (a *Agent) commitHousekeeping(ctx context.Context, r Record) {
	if img, ok := r.SlotImages[a.booted.Label]; ok && !img.KeptUnhealthy && img.Version == a.release.Version && img.SecurityVersion > 0 {
		v, err := a.floor.Advance(ctx, img.SecurityVersion)
		if err != nil {
			a.log.Error("could not advance the anti-rollback floor; will retry at the next start",
				"security_version", img.SecurityVersion, "error", err)
		} else {
			a.log.Info("anti-rollback floor", "floor", v, "tpm", a.h.TPM != nil)
		}
	}
	a.measure(ctx, r)
}

// measure extends the PCR with the booted image's digest, once per boot.
func (a *Agent) measure(_ context.Context, r Record) {
	img, ok := r.SlotImages[a.booted.Label]
	if a.h.TPM == nil || !ok || img.Version != a.release.Version {
		return
	}
	marker := filepath.Join(a.h.Paths.StateDir, measuredFile)
	if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == a.h.BootID {
		return
	}
	raw, err := hex.DecodeString(img.SHA256)
	if err != nil || len(raw) != 32 {
		a.log.Error("bad recorded image digest; not measuring", "digest", img.SHA256)
		return
	}
	if err := floor.Extend(a.h.TPM, a.c.PCR, [32]byte(raw)); err != nil {
		a.log.Error("could not measure the booted image into the TPM", "pcr", a.c.PCR, "error", err)
		return
	}
	if err := atomicfile.WriteFile(marker, []byte(a.h.BootID+"\n"), 0o600); err != nil {
		a.log.Warn("could not record the measurement", "error", err)
	}
	a.log.Info("measured the booted image", "pcr", a.c.PCR, "digest", img.SHA256)
}

func (a *Agent) rollBack(ctx context.Context, r Record) (Event, error) {
	if f := r.Failure; f != nil {
		a.event(ctx, r, omaha.ErrorEvent(omaha.ErrorCode(f.Code)))
		if ctx.Err() != nil {
			return Event{}, errStop
		}
	}
	d, booted, err := a.openDisk()
	if err != nil {
		return Event{}, fmt.Errorf("updated: roll back: open the disk: %w", err)
	}
	g := a.gpt(d)
	next, err := g.Rollback(booted)
	err = a.inEffect(g, "roll back from "+booted.Label, err)
	if errors.Is(err, partition.ErrRollbackRefused) {
		d.Close()
		a.log.Error("cannot roll back; keeping the running slot so the host stays bootable", "error", err)
		msg := "health gate failed"
		if r.Failure != nil {
			msg = r.Failure.Message
		}
		return Event{Kind: EvRollbackRefused, Failure: &Failure{Code: CodeHealthGateFailed, Message: msg + "; rollback refused: " + err.Error()}}, nil
	}
	if err == nil {
		err = a.inEffect(g, "mark "+booted.Label+" bad", g.MarkBad(booted))
	}
	d.Close()
	if err != nil {
		return Event{}, fmt.Errorf("updated: roll back from %s: %w", booted.Label, err)
	}
	a.log.Error("health gate failed: rebooting into the previous slot", "bad_slot", booted.Label, "next", next.Label)
	return a.rebootNow(ctx)
}

// rebootNow asks for a reboot until the host accepts it, then waits to be stopped by it; it
// returns only when ctx ends.
func (a *Agent) rebootNow(ctx context.Context) (Event, error) {
	for {
		if err := a.h.Reboot.Reboot(ctx); err != nil {
			a.log.Error("reboot refused; retrying", "error", err)
			if _, err := a.wait(ctx, a.c.Schedule.NextCheck(1, 0, a.rnd)/8); err != nil {
				return Event{}, err
			}
			continue
		}
		if _, err := a.wait(ctx, a.c.RebootTimeout); err != nil {
			return Event{}, err
		}
		a.log.Error("still running long after the reboot was accepted; asking again", "waited", a.c.RebootTimeout)
	}
}

// parseDuration parses a Go duration ("5m") or plain seconds ("300").
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = errors.New("must be positive")
	}
	return d, err
}
