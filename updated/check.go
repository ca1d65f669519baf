package updated

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// conf reads update.conf (re-read at every check, as update_engine does).
func (a *Agent) conf() (*updateconf.Config, error) {
	return updateconf.LoadEnv(a.h.Paths.Environ, a.h.Paths.Config...)
}

// servers splits SERVER into URLs (several, separated by spaces or commas, fail over in order).
func servers(c *updateconf.Config) []string {
	return strings.FieldsFunc(c.Server, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
}

// checksDisabled re-reads update.conf and reports whether checks are off (or it is unreadable).
func (a *Agent) checksDisabled() bool {
	c, err := a.conf()
	if err != nil {
		a.log.Error("cannot read update.conf; not checking for updates until it is fixed", "error", err)
	}
	return c == nil || c.Disabled() || len(servers(c)) == 0
}

func (a *Agent) idle(ctx context.Context, r Record) (Event, error) {
	for {
		disabled := a.checksDisabled()
		d := a.nextCheck.Sub(a.clk.Now())
		if r.Failures == 0 && (r.Rollback != nil || (r.PrevVersionPref != "" && r.PrevVersionPref != "0.0.0.0")) {
			d = 0 // a commit or a rollback waits to be reported (unless the server is failing)
		}
		if disabled {
			d = a.c.Schedule.Period // re-read update.conf now and then
		}
		i, err := a.wait(ctx, d, a.trigger, a.reset)
		if err != nil {
			return Event{}, err
		}
		if i != 1 {
			disabled = a.checksDisabled() // update.conf may have changed while waiting
		}
		switch {
		case i == 1:
			// ResetStatus forgets the backoff with the failures: the next check is due on the
			// normal schedule again.
			a.nextCheck = a.clk.Now().Add(a.c.Schedule.NextCheck(0, a.poll, a.rnd))
			return Event{Kind: EvReset}, nil
		case disabled:
			if i == 0 {
				a.log.Warn("update check asked for, but updates are disabled (SERVER in update.conf is empty or \"disabled\")")
			}
			continue
		default:
			a.interactive = i == 0
			return Event{Kind: EvCheckDue}, nil
		}
	}
}

// identity is the Omaha host identity.
func (a *Agent) identity(c *updateconf.Config, r Record) omaha.Host {
	return omaha.Host{
		AppID: a.c.AppID, MachineID: a.h.MachineID, BootID: a.h.BootID,
		Version: a.release.Version, Track: c.Group, Board: a.release.Board,
		OEM: a.release.OEM, OEMVersion: a.release.OEMVersion,
		AlephVersion: r.AlephVersion, MachineAlias: c.MachineAlias,
	}
}

// withConfigOrigin adds to a server's "no such group" answer which update.conf set GROUP, so
// the operator sees what to fix and where ("the server knows no group "nightly" … (GROUP=nightly
// in /etc/flatcar/update.conf)").
func withConfigOrigin(err error, c *updateconf.Config) error {
	var ug *omaha.UnknownGroupError
	if !errors.As(err, &ug) {
		return err
	}
	if o, ok := c.Origin("GROUP"); ok {
		return fmt.Errorf("%w (%s=%s in %s)", err, o.Key, c.Group, o.File)
	}
	return fmt.Errorf("%w (GROUP is not set in any update.conf; the default is %s)", err, c.Group)
}

func (a *Agent) client(c *updateconf.Config) (*omaha.Client, error) {
	return omaha.NewClient(servers(c), omaha.ClientOptions{HTTPClient: a.h.HTTP, Credential: a.credential()})
}

func (a *Agent) check(ctx context.Context, r Record) (Event, error) {
	interactive := a.interactive
	a.interactive = false
	c, err := a.conf()
	if err != nil {
		a.scheduleAfterFailure(r)
		return failed(CodeError, "read update.conf: %v", err), nil
	}
	a.enrollIfNeeded(ctx, c)
	cl, err := a.client(c)
	if err != nil {
		a.scheduleAfterFailure(r)
		return failed(CodeError, "%v", err), nil
	}
	opt := omaha.CheckOptions{PreviousVersion: r.PrevVersionPref, Rollback: r.Rollback != nil, Interactive: interactive}
	res, err := cl.UpdateCheck(ctx, a.identity(c, r), opt)
	if ctx.Err() != nil {
		return Event{}, errStop
	}
	if err != nil {
		a.scheduleAfterFailure(r)
		code := CodeError
		var oe *omaha.Error
		if errors.As(err, &oe) {
			code = int(oe.Code())
		}
		err = withConfigOrigin(err, c)
		a.log.Warn("update check failed", "error", err, "code", code, "next_check_in", a.nextCheck.Sub(a.clk.Now()).Round(time.Second))
		return failed(code, "%v", err), nil
	}
	a.poll = res.PollInterval
	a.nextCheck = a.clk.Now().Add(a.c.Schedule.NextCheck(0, a.poll, a.rnd))
	u := res.Update
	if u == nil {
		a.log.Info("no update", "server", res.Server, "version", a.release.Version, "next_check_in", a.nextCheck.Sub(a.clk.Now()).Round(time.Second))
		return Event{Kind: EvNoUpdate, Delivered: true}, nil
	}
	if u.Version == a.release.Version {
		a.log.Warn("the server offered the version already running; ignoring it", "version", u.Version)
		return Event{Kind: EvNoUpdate, Delivered: true}, nil
	}
	if r.IsBad(u.Version) {
		// Reported as update_engine's "ignored per policy" (sent with result 9, deferred).
		a.scheduleAfterFailure(r)
		ev := failed(int(omaha.ErrorCodeOmahaUpdateIgnoredPerPolicy),
			"version %s failed on this host before; not installing it again (updatectl reset clears this)", u.Version)
		ev.Delivered = true
		return ev, nil
	}
	o := &Offer{Version: u.Version, URLs: u.DownloadURLs(), Name: u.PackageName, Size: u.Size,
		SHA256: fmt.Sprintf("%x", u.SHA256)}
	a.log.Info("update available", "version", o.Version, "size", o.Size, "urls", o.URLs)
	return Event{Kind: EvUpdateFound, Offer: o, BootedVersion: a.release.Version, Delivered: true}, nil
}

func (a *Agent) scheduleAfterFailure(r Record) {
	a.nextCheck = a.clk.Now().Add(a.c.Schedule.NextCheck(r.Failures+1, 0, a.rnd))
}

// event sends an Omaha event, best effort (update_engine does not judge event replies).
func (a *Agent) event(ctx context.Context, r Record, ev omaha.Event) {
	c, err := a.conf()
	if err == nil {
		var cl *omaha.Client
		if cl, err = a.client(c); err == nil {
			err = cl.Event(ctx, a.identity(c, r), ev)
		}
	}
	if err != nil && ctx.Err() == nil {
		a.log.Warn("could not report an event to the update server", "type", int(ev.Type), "result", int(ev.Result),
			"code", int(ev.ErrorCode), "error", err)
	}
}

func (a *Agent) reportError(ctx context.Context, r Record) (Event, error) {
	if f := r.Failure; f != nil {
		a.log.Error("update failed", "step", f.Step, "code", f.Code, "error", f.Message)
		a.event(ctx, r, omaha.ErrorEvent(omaha.ErrorCode(f.Code)))
		if ctx.Err() != nil {
			return Event{}, errStop
		}
	}
	return Event{Kind: EvReported}, nil
}
