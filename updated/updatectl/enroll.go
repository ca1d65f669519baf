package updatectl

import (
	"context"
	"fmt"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated/enroll"
)

// EnrollReport is the output of `updatectl enroll --json` (never the credential itself).
type EnrollReport struct {
	AppID     string `json:"app_id"`
	MachineID string `json:"machine_id"`
	GroupID   string `json:"group_id,omitempty"`
	File      string `json:"file"`
}

func (env Env) runEnroll(ctx context.Context, stdio cli.IO, args []string) error {
	fs := stdio.FlagSet("updatectl enroll", "--token T [--server URL] [--state-dir DIR] [--json]", `
Enroll this host with its update server: exchange the enrollment token (releasectl
enroll-token create) for a credential bound to this host's machine id, and save it in the
agent's state directory (host-credential.json, mode 0600), which updated sends with every
request from then on. Groups with --require-enrollment offer updates only to enrolled hosts.
Enrolling again replaces the credential. Setting ENROLLMENT_TOKEN in update.conf instead makes
updated enroll by itself at its next check.`)
	token := fs.String("token", "", "the enrollment `token` (required)")
	server := fs.String("server", "", "Omaha update `URL` (default: SERVER from update.conf)")
	config := fs.String("config", "", "update.conf `file` (default: the layered files updated reads; see updatectl config)")
	machineID := fs.String("machine-id", "", "machine id to enroll (default: /etc/machine-id)")
	dir := fs.String("state-dir", DefaultStateDir, "updated's state `directory`, where the credential is saved")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseNone(fs, args); err != nil {
		return err
	}
	if *token == "" {
		return cli.Usagef("--token is required (releasectl enroll-token create makes one)")
	}
	// Enrollment sends neither version nor board: placeholders spare reading os-release.
	id, err := env.identity(*config, *server, "", "0.0.0", "any", *machineID)
	if err != nil {
		return err
	}
	if err := omaha.CheckMachineID(id.host.MachineID); err != nil {
		return err
	}
	cl, err := omaha.NewClient([]string{id.server}, omaha.ClientOptions{})
	if err != nil {
		return err
	}
	c, err := enroll.Enroll(ctx, cl, *dir, id.host.AppID, id.host.MachineID, *token, time.Now())
	if err != nil {
		return err
	}
	rep := EnrollReport{AppID: c.AppID, MachineID: c.MachineID, GroupID: c.GroupID, File: enroll.Path(*dir)}
	if *asJSON {
		return cli.PrintJSON(stdio.Stdout, rep)
	}
	fmt.Fprintf(stdio.Stdout, "enrolled machine %s with %s; credential saved in %s\n", rep.MachineID, id.server, rep.File)
	return nil
}
