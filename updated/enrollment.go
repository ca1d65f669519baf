package updated

import (
	"context"
	"errors"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/updated/enroll"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// ConfEnrollmentToken is the update.conf key holding an enrollment token (releasectl
// enroll-token create): at its next update check an agent without a credential exchanges it
// for one (package enroll). The token is a secret; updatectl config does not show it.
const ConfEnrollmentToken = "ENROLLMENT_TOKEN"

// credential returns the host credential stored in the state directory for this app and
// machine ("" when there is none): read at every request, so that `updatectl enroll` takes
// effect without a restart.
func (a *Agent) credential() string {
	c, err := enroll.Load(a.h.Paths.StateDir, a.c.AppID, a.h.MachineID)
	if err != nil {
		if !errors.Is(err, enroll.ErrNotEnrolled) {
			a.log.Error("cannot read the host credential; checking in without it", "error", err)
		}
		return ""
	}
	return c.Credential
}

// enrollIfNeeded enrolls the host when update.conf holds an enrollment token and the host has
// no credential yet. A failure is logged and the check goes on anonymously (a group that
// requires enrollment then answers noupdate); the next check tries again.
func (a *Agent) enrollIfNeeded(ctx context.Context, c *updateconf.Config) {
	token := c.Values[ConfEnrollmentToken]
	if token == "" || a.credential() != "" {
		return
	}
	cl, err := omaha.NewClient(servers(c), omaha.ClientOptions{HTTPClient: a.h.HTTP})
	if err == nil {
		var cred enroll.Credential
		if cred, err = enroll.Enroll(ctx, cl, a.h.Paths.StateDir, a.c.AppID, a.h.MachineID, token, a.clk.Now()); err == nil {
			a.log.Info("enrolled with the update server", "machine", a.h.MachineID, "group_id", cred.GroupID, "file", enroll.Path(a.h.Paths.StateDir))
			return
		}
	}
	if ctx.Err() == nil {
		attrs := []any{"error", err}
		if o, ok := c.Origin(ConfEnrollmentToken); ok {
			attrs = append(attrs, "token_from", o.File)
		}
		a.log.Error("enrollment failed: checking in without a credential, so groups that require enrollment offer no update; "+
			"fix ENROLLMENT_TOKEN in update.conf (releasectl enroll-token create makes one) or run updatectl enroll --token", attrs...)
	}
}
