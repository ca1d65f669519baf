package locksmithctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/internal/etcdflags"
	"github.com/twinslot/twinslot/locksmith/internal/hostenv"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/sysd"
)

const (
	prog = "locksmithctl"
	// EnvPrefix is the prefix of the environment variables that set flags.
	EnvPrefix = "LOCKSMITHCTL_"
	opTimeout = 30 * time.Second
)

// globals are the flags every command accepts.
type globals struct {
	etcd    etcdflags.Flags
	group   string
	id      string
	timeout time.Duration
	asJSON  bool
	debug   bool
	version bool
	env     []string
	now     func() time.Time
	stdio   cli.IO
}

func (g *globals) register(fs *flag.FlagSet) {
	g.etcd.Register(fs)
	fs.StringVar(&g.group, "group", g.group, "reboot group (default \""+locksmith.DefaultGroup+"\")")
	fs.StringVar(&g.id, "id", g.id, "act for this machine id (default: the content of "+hostenv.MachineIDPath+")")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "give up on etcd after this long")
	fs.BoolVar(&g.asJSON, "json", g.asJSON, "print the result as JSON")
	fs.BoolVar(&g.debug, "debug", g.debug, "print what locksmithctl does (endpoints, group, each etcd operation) to stderr")
	fs.BoolVar(&g.version, "version", g.version, "print the version and exit")
}

// debugf prints a debug line to stderr with -debug.
func (g *globals) debugf(format string, args ...any) {
	if g.debug {
		fmt.Fprintf(g.stdio.Stderr, "locksmithctl: debug: "+format+"\n", args...)
	}
}

// printVersion prints the version the binary was built from.
func (g *globals) printVersion() {
	v := "(unknown)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if (v == "" || v == "(devel)") && rev != "" {
			v = rev[:min(12, len(rev))] + dirty
		}
	}
	fmt.Fprintf(g.stdio.Stdout, "locksmithctl version %s (twinslot, etcd v3)\n", v)
}

// Env is what locksmithctl takes from its surroundings: the process environment (LOCKSMITHCTL_* flags, DBUS_SYSTEM_BUS_ADDRESS),
// which the binary passes as os.Environ().
type Env struct{ Environ []string }

// Main is locksmithctl's command line with an empty environment (Env{}.Main).
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is locksmithctl's command line with env's environment (see Run).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, args, env.Environ, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Run runs locksmithctl with args (without the program name). environ is the environment in
// KEY=VALUE form: LOCKSMITHCTL_<FLAG> sets a flag not given on the command line.
func Run(ctx context.Context, args, environ []string, stdio cli.IO) int {
	g := &globals{env: environ, now: time.Now, timeout: opTimeout, stdio: stdio}
	// Global flags may precede the command (CoreOS style); they stop at the command name.
	gfs := stdio.FlagSet(prog, "[global flags] <command> [flags]", "")
	g.register(gfs)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			args = []string{"--help"}
		} else {
			fmt.Fprintf(stdio.Stderr, "%s: %v\nRun '%s --help' for usage.\n", prog, err, prog)
			return 2
		}
	} else {
		args = gfs.Args()
	}
	if g.version {
		g.printVersion()
		return 0
	}
	return cli.Run(ctx, prog, "inspect and change the reboot semaphore (etcd v3)", g.commands(gfs), args, stdio)
}

// flags returns a command's flag set with the global flags too, and a parse function that
// applies the environment for flags given neither before the command nor after it.
func (g *globals) flags(stdio cli.IO, gfs *flag.FlagSet, name, argsUsage, help string) (*flag.FlagSet, func([]string) ([]string, error)) {
	fs := stdio.FlagSet(prog+" "+name, argsUsage, help)
	g.register(fs)
	return fs, func(args []string) ([]string, error) {
		pos, err := cli.Parse(fs, args)
		if err != nil {
			return nil, err
		}
		if err := etcdflags.SetFromEnv(fs, EnvPrefix, g.env, gfs); err != nil {
			return nil, cli.Usagef("%v", err)
		}
		if g.version {
			g.printVersion()
			return nil, flag.ErrHelp // done, exit 0
		}
		if g.group == "" {
			g.group = locksmith.DefaultGroup
		}
		g.debugf("group %q, endpoints %s, timeout %s", g.group, g.etcd.Endpoints.String(), g.timeout)
		return pos, nil
	}
}

func (g *globals) commands(gfs *flag.FlagSet) []cli.Command {
	return []cli.Command{
		{Name: "status", Summary: "show available slots, max and the holders' machine ids (--long: age, versions, state)", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			fs, parse := g.flags(stdio, gfs, "status", "[--json] [--long] [--stale-after D]",
				"Prints the group's semaphore as CoreOS locksmithctl does (Available, Max, the holders' machine ids);\n--long adds each holder's slot, host, state, age and versions, --json all of it for scripts.\nA holder not seen (no re-lock, no reboot, no boot) for longer than --stale-after is reported on\nstderr with the command that frees its slot; nothing is freed on its own.")
			long := fs.Bool("long", false, "show each holder's slot, host, state, age, last seen, versions and note")
			out := fs.String("o", "", "deprecated: \"-o json\" is --json, \"-o text\" the default")
			staleAfter := fs.Duration("stale-after", locksmith.DefaultStaleAfter, "flag holders not seen for longer than this (0: never)")
			if _, err := parse(args); err != nil {
				return err
			}
			switch *out {
			case "", "text":
			case "json":
				fmt.Fprintln(stdio.Stderr, "locksmithctl: -o json is deprecated; use --json")
				g.asJSON = true
			default:
				return cli.Usagef("-o %q: want text or json (deprecated; use --json)", *out)
			}
			if *staleAfter < 0 {
				return cli.Usagef("--stale-after %s: want 0 or more", *staleAfter)
			}
			return g.status(ctx, stdio, *long, *staleAfter)
		}},
		{Name: "lock", Summary: "take a reboot slot for machine ID (default: this machine)", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			_, parse := g.flags(stdio, gfs, "lock", "[ID]", "Takes a reboot slot for machine ID, or for this machine (--id, else /etc/machine-id). Re-locking a\nslot the machine holds succeeds.")
			pos, err := parse(args)
			if err != nil {
				return err
			}
			if err := cli.NArgs(pos, 0, 1, "at most one machine id"); err != nil {
				return err
			}
			return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
				id, err := g.target(pos)
				if err != nil {
					return err
				}
				lk, err := s.TryLock(ctx, g.group, locksmith.Holder{ID: id, Note: "locksmithctl lock"})
				if err != nil {
					return err
				}
				if g.asJSON {
					return cli.PrintJSON(stdio.Stdout, map[string]any{"group": g.group, "id": id, "slot": lk.Slot.Index})
				}
				fmt.Fprintf(stdio.Stdout, "Locked slot %d of group %s for %s\n", lk.Slot.Index, g.group, id)
				return nil
			})
		}},
		{Name: "unlock", Summary: "release machine ID's slot (default: this machine's), e.g. of a dead host", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			fs, parse := g.flags(stdio, gfs, "unlock", "[ID]", "Releases the slot of machine ID, or of this machine (--id, else /etc/machine-id). Freeing the\nslot of a host that is gone is \"unlock ID\", as with CoreOS locksmithctl.")
			force := fs.String("force", "", "deprecated: the same as \"unlock `ID`\"")
			pos, err := parse(args)
			if err != nil {
				return err
			}
			if err := cli.NArgs(pos, 0, 1, "at most one machine id"); err != nil {
				return err
			}
			if *force != "" {
				if len(pos) == 1 && pos[0] != *force {
					return cli.Usagef("two machine ids: %s and --force %s", pos[0], *force)
				}
				pos = []string{*force}
			}
			return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
				id, err := g.target(pos)
				if err != nil {
					return err
				}
				// The operator acts for the machine, as CoreOS locksmithctl does: no force needed.
				h, err := s.Unlock(ctx, g.group, id, id, false)
				if err != nil {
					return err
				}
				if g.asJSON {
					return cli.PrintJSON(stdio.Stdout, map[string]any{"group": g.group, "id": h.ID, "acquired_at": h.AcquiredAt})
				}
				fmt.Fprintf(stdio.Stdout, "Unlocked %s in group %s (held since %s)\n", h.ID, g.group, h.AcquiredAt.Format(time.RFC3339))
				return nil
			})
		}},
		{Name: "set-max", Summary: "set how many hosts of the group may reboot at once", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			_, parse := g.flags(stdio, gfs, "set-max", "N", "Sets the group's max. Lowering it below the current holders keeps them; nobody new gets a slot until the group is under.")
			pos, err := parse(args)
			if err != nil {
				return err
			}
			if err := cli.NArgs(pos, 1, 1, "N"); err != nil {
				return err
			}
			n, err := strconv.Atoi(pos[0])
			if err != nil || n < 0 || n > locksmith.MaxSlots {
				return cli.Usagef("N = %q: want a number from 0 to %d", pos[0], locksmith.MaxSlots)
			}
			return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
				old, err := s.SetMax(ctx, g.group, n)
				if err != nil {
					return err
				}
				if g.asJSON {
					return cli.PrintJSON(stdio.Stdout, map[string]any{"group": g.group, "old_max": old, "max": n})
				}
				fmt.Fprintf(stdio.Stdout, "Old-Max: %d\nMax: %d\n", old, n)
				return nil
			})
		}},
		{Name: "set-policy", Summary: "set the group's holder lease TTL and stale policy", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			fs, parse := g.flags(stdio, gfs, "set-policy", "--lease-ttl D --stale hold|expire",
				"With --stale hold (default) a host that never releases keeps its slot and a bad rollout stops; the TTL only marks it stale in status.\nWith --stale expire, new slots are attached to an etcd lease of the TTL and vanish when it runs out.")
			ttl := fs.Duration("lease-ttl", 0, "holder lease TTL, e.g. 1h (0: none)")
			stale := fs.String("stale", string(locksmith.StaleHold), "stale policy: hold or expire")
			if _, err := parse(args); err != nil {
				return err
			}
			if *ttl < 0 || *ttl%time.Second != 0 {
				return cli.Usagef("--lease-ttl %s: want whole seconds, 0 or more", *ttl)
			}
			return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
				_, c, err := s.SetConfig(ctx, g.group, func(c locksmith.GroupConfig) locksmith.GroupConfig {
					c.LeaseTTLSeconds, c.Stale = int64(*ttl/time.Second), locksmith.StalePolicy(*stale)
					return c
				})
				if err != nil {
					return err
				}
				if g.asJSON {
					return cli.PrintJSON(stdio.Stdout, map[string]any{"group": g.group, "lease_ttl_seconds": c.LeaseTTLSeconds, "stale_policy": c.Stale})
				}
				fmt.Fprintf(stdio.Stdout, "Lease-TTL: %s\nStale: %s\n", c.LeaseTTL(), c.Stale)
				return nil
			})
		}},
		{Name: "send-need-reboot", Summary: "tell locksmithd a reboot is needed (StatusUpdate on the system bus)", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			_, parse := g.flags(stdio, gfs, "send-need-reboot", "", "Emits com.coreos.update1.Manager.StatusUpdate with UPDATE_STATUS_UPDATED_NEED_REBOOT, as update_engine does after an update.")
			if _, err := parse(args); err != nil {
				return err
			}
			return g.withBus(func(conn *dbus.Conn) error {
				if err := conn.Emit(dbusapi.ObjectPath, dbusapi.SignalStatusUpdate, int64(0), float64(0), dbusapi.OpUpdatedNeedReboot, "", int64(0)); err != nil {
					return fmt.Errorf("emit StatusUpdate: %w", err)
				}
				if g.asJSON {
					return cli.PrintJSON(stdio.Stdout, map[string]any{"sent": dbusapi.SignalStatusUpdate, "current_operation": dbusapi.OpUpdatedNeedReboot})
				}
				fmt.Fprintln(stdio.Stdout, "Sent StatusUpdate(UPDATE_STATUS_UPDATED_NEED_REBOOT)")
				return nil
			})
		}},
		{Name: "reboot", Summary: "take a reboot slot for this machine, then reboot through logind", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
			_, parse := g.flags(stdio, gfs, "reboot", "", "Takes a slot (fails if the group is full) and asks logind to reboot; if logind refuses, the slot is released again.")
			if _, err := parse(args); err != nil {
				return err
			}
			return g.withBus(func(conn *dbus.Conn) error { return g.reboot(ctx, stdio, conn) })
		}},
	}
}

// reboot takes a slot, asks logind to reboot, and gives the slot back if logind refuses.
func (g *globals) reboot(ctx context.Context, stdio cli.IO, conn *dbus.Conn) error {
	return g.withStore(ctx, func(ctx context.Context, s *locksmith.Store) error {
		id, err := g.machineID()
		if err != nil {
			return err
		}
		lk, err := s.TryLock(ctx, g.group, locksmith.Holder{ID: id, Note: "locksmithctl reboot"})
		if err != nil {
			return err
		}
		if err := (sysd.Logind{Conn: conn}).Reboot(ctx); err != nil {
			if uerr := s.Release(ctx, lk); uerr != nil {
				return fmt.Errorf("%w; and releasing the slot failed too: %v (run locksmithctl unlock)", err, uerr)
			}
			return fmt.Errorf("%w; the slot was released", err)
		}
		if g.asJSON {
			return cli.PrintJSON(stdio.Stdout, map[string]any{"group": g.group, "id": id, "slot": lk.Slot.Index, "rebooting": true})
		}
		fmt.Fprintf(stdio.Stdout, "Locked slot %d of group %s; rebooting\n", lk.Slot.Index, g.group)
		return nil
	})
}

func (g *globals) machineID() (string, error) { return hostenv.MachineID(g.id) }

// target is the machine id a command acts on: the argument, else this machine's.
func (g *globals) target(pos []string) (string, error) {
	if len(pos) == 1 {
		if pos[0] == "" {
			return "", cli.Usagef("empty machine id")
		}
		return pos[0], nil
	}
	return g.machineID()
}

func (g *globals) withStore(ctx context.Context, fn func(context.Context, *locksmith.Store) error) error {
	cli, err := g.etcd.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	start := time.Now()
	err = fn(ctx, locksmith.NewStore(cli, "", g.now))
	g.debugf("etcd operations on group %q took %s; error: %v", g.group, time.Since(start).Round(time.Millisecond), err)
	// The store's errors say what happened (no leader, unreachable, timeout, TLS, auth); only an
	// error from elsewhere that ran into the deadline gets a generic hint.
	var ee *locksmith.EtcdError
	if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &ee) && !errors.Is(err, locksmith.ErrFull) {
		return fmt.Errorf("%w (after %s; is etcd at %s reachable?)", err, g.timeout, strings.Join(g.etcd.Endpoints.List(), ","))
	}
	return err
}

// withBus runs fn with a connection to the system bus.
func (g *globals) withBus(fn func(*dbus.Conn) error) error {
	conn, err := hostenv.SystemBus(g.env)
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn)
}
