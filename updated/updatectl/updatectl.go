package updatectl

import (
	"context"
	"io"
	"io/fs"
	"os"

	"github.com/twinslot/twinslot/tools/cli"
)

const summary = "show and change the A/B /usr slots and the update state of this host"

// Env is how updatectl reaches the host.
type Env struct {
	// Host is the host's root directory (os.DirFS("/")): proc/cmdline, proc/self/mountinfo,
	// dev/disk/by-partuuid and sys/class/block locate the booted /usr and its disk.
	Host fs.FS
}

// Main runs updatectl on this host with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, Env{Host: os.DirFS("/")}, args, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Run runs updatectl with env. --json may also come before the command ("updatectl --json
// slots"), as in the other twinslot CLIs; it is moved after the command name.
func Run(ctx context.Context, env Env, args []string, stdio cli.IO) int {
	var lead []string
	for len(args) > 1 && (args[0] == "--json" || args[0] == "-json") {
		lead, args = append(lead, args[0]), args[1:]
	}
	if len(lead) > 0 {
		args = append(append([]string{args[0]}, lead...), args[1:]...)
	}
	return cli.Run(ctx, "updatectl", summary, Commands(env), args, stdio)
}

// Commands are updatectl's subcommands. Add new ones here.
func Commands(env Env) []cli.Command {
	var cmds []cli.Command
	cmds = append(cmds, slotCommands(env)...)
	cmds = append(cmds, agentCommands(env)...)
	return cmds
}
