// Package updatedcmd is the updated command: it wires the update agent to a real host: flags, logging (journald when present),
// the machine and boot ids, the disk of the booted /usr, D-Bus (API, systemd probe, logind
// reboot), the TPM and sd_notify. updated's main is a call to Main; tests and benchmarks run
// the built binary with --root pointing at a directory that stands in for the host's "/".
package updatedcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/journal"
	"github.com/godbus/dbus/v5"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/tools/cli"
	"github.com/twinslot/twinslot/updated"
	"github.com/twinslot/twinslot/updated/sysd"
	"github.com/twinslot/twinslot/updated/updateconf"
)

const summary = "twinslot's host update agent"

const help = `updated checks the Omaha server named in update.conf, installs signed /usr payloads into the
inactive slot, proves a new boot healthy before committing it, rolls back when it is not, and
serves com.coreos.update1 on D-Bus. update.conf is read from ` + "/usr/share/twinslot, /etc/coreos,\n/etc/flatcar and /etc/twinslot" + `, a later file winning key by key; the environment (systemd's
Environment=) wins over every file. updatectl config shows the effective values and their files.`

// Env is what updated takes from its surroundings: the process environment (update.conf keys set by systemd's Environment=),
// which the binary passes as os.Environ().
type Env struct{ Environ []string }

// Main is updated's command line with an empty environment (Env{}.Main).
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is updated's command line with env's environment (see Run).
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Run(ctx, args, env.Environ, cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// Run is Main with the environment given: "updated [run] [flags]" runs the agent; --help prints
// the flags, "help" the commands. Exit codes are tools/cli's: 0 after a clean stop, 1 on failure, 2 on a bad command
// line.
func Run(ctx context.Context, args, environ []string, stdio cli.IO) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") { // "updated --help" shows run's flags

		args = append([]string{"run"}, args...)
	}
	cmds := []cli.Command{{Name: "run", Summary: "run the update agent until stopped (the default)", Run: func(ctx context.Context, stdio cli.IO, args []string) error {
		return runAgent(ctx, args, environ, stdio)
	}}}
	return cli.Run(ctx, "updated", summary, cmds, args, stdio)
}

func runAgent(ctx context.Context, args, environ []string, stdio cli.IO) error {
	fs := stdio.FlagSet("updated", "[run] [flags]", help)
	config := fs.String("config", "", "one update.conf `FILE` to read instead of the layered files (see above)")
	disk := fs.String("disk", "", "disk holding the /usr slots (default: the disk of the booted /usr)")
	root := fs.String("root", "/", "the host's root directory: proc/cmdline, etc/machine-id and usr/lib/os-release are read below it")
	stateDir := fs.String("state-dir", "/var/lib/twinslot", "state directory")
	etc := fs.String("etc", "/etc/twinslot", "directory of the admin's trust.json and health.d/")
	busFlag := fs.String("bus", "system", `D-Bus: "system", "none", or a bus address (unix:path=…)`)
	tpmFlag := fs.String("tpm", "auto", `TPM: "auto" (/dev/tpmrm0 if present), "none", a device path, or unix:SOCKET (swtpm)`)
	espDir := fs.String("esp", "/boot", "the EFI system partition's mount point `DIR`; when DIR/twinslot/ exists, each install copies the new slot's kernel and initrd there before the flip (otherwise nothing is written there)")
	firstCheck := fs.Duration("first-check", 0, "for labs and tests: the first update check comes `DURATION` after start, jittered in the default's proportion (7±5 min); 0: the default")
	checkInterval := fs.Duration("check-interval", 0, "for labs and tests: check every `DURATION` instead of every 45 min, jittered in the default's proportion (45±5 min); 0: the default")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logStderr := fs.Bool("log-stderr", false, "log to stderr even when the journal is available")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if err := cli.NArgs(pos, 0, 0, "no arguments"); err != nil {
		return err
	}
	if *firstCheck < 0 || *checkInterval < 0 {
		return cli.Usagef("--first-check and --check-interval must not be negative")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cli.Usagef("--log-level: %v", err)
	}
	var handler slog.Handler = slog.NewTextHandler(stdio.Stderr, &slog.HandlerOptions{Level: level})
	if !*logStderr && journal.Enabled() {
		handler = sysd.NewJournalHandler(level)
	}
	log := slog.New(handler)
	if err := run(ctx, log, options{config: *config, disk: *disk, root: *root, stateDir: *stateDir, etc: *etc,
		bus: *busFlag, tpm: *tpmFlag, esp: *espDir, environ: environ, schedule: Schedule(*firstCheck, *checkInterval)}); err != nil {
		log.Error("updated stopped", "error", err)
		return err
	}
	return nil
}

type options struct {
	config, disk, root, stateDir, etc, bus, tpm, esp string
	environ                                          []string
	schedule                                         updated.Schedule
}

// Schedule is updated.DefaultSchedule with the first check after first and the period set to
// interval (0 keeps the default), each fuzz scaled in the default's proportion: --first-check
// and --check-interval, for labs and tests that cannot wait 7 and 45 minutes.
func Schedule(first, interval time.Duration) updated.Schedule {
	s := updated.DefaultSchedule()
	scale := func(fuzz, d, def time.Duration) time.Duration {
		return time.Duration(float64(fuzz) * float64(d) / float64(def))
	}
	if first > 0 {
		s.First, s.FirstFuzz = first, scale(s.FirstFuzz, first, s.First)
	}
	if interval > 0 {
		s.Period, s.PeriodFuzz = interval, scale(s.PeriodFuzz, interval, s.Period)
	}
	return s
}

func run(ctx context.Context, log *slog.Logger, o options) error {
	rootFS := os.DirFS(o.root)
	machineID, err := readID(rootFS, "etc/machine-id")
	if err != nil {
		return err
	}
	if err := omaha.CheckMachineID(machineID); err != nil {
		return fmt.Errorf("/etc/machine-id: %w", err)
	}
	bootID, err := readID(rootFS, "proc/sys/kernel/random/boot_id")
	if err != nil {
		return err
	}
	paths := updated.Paths{
		StateDir: o.stateDir, Environ: o.environ, HealthDir: filepath.Join(o.etc, "health.d"), ESPDir: o.esp,
		TrustRoots: []string{filepath.Join(o.etc, "trust.json"), filepath.Join(o.root, "usr/share/twinslot/trust.json")},
	}
	if o.config != "" {
		paths.Config = []string{o.config}
	} else {
		for _, p := range updateconf.DefaultPaths() {
			paths.Config = append(paths.Config, filepath.Join(o.root, p))
		}
	}
	host := updated.Host{
		Disk: updated.SystemDisk{Root: rootFS, Path: o.disk}, Boot: updated.SystemDisk{Root: rootFS, Path: o.disk},
		MachineID: machineID, BootID: bootID, Paths: paths,
		Notify: func(s string) error { _, err := sddaemon.SdNotify(false, s); return err },
		Reboot: noReboot{},
	}
	cfg := updated.Config{Logger: log, Schedule: o.schedule}
	if wd, err := sddaemon.SdWatchdogEnabled(false); err == nil {
		cfg.Watchdog = wd
	}

	if o.bus != "none" {
		dial := func() (*dbus.Conn, error) {
			if o.bus == "system" {
				return dbus.ConnectSystemBus()
			}
			return dbus.Connect(o.bus)
		}
		conn, err := dial()
		if err != nil {
			return fmt.Errorf("connect to D-Bus (%s): %w; use --bus none to run without it", o.bus, err)
		}
		defer conn.Close()
		cfg.Bus = conn
		host.Reboot = sysd.Logind{Conn: conn}
		sd, err := sdbus.NewConnection(dial)
		if err != nil {
			return fmt.Errorf("connect to systemd over D-Bus: %w", err)
		}
		defer sd.Close()
		host.System = sysd.Systemd{Conn: sd}
	} else {
		log.Warn("running without D-Bus: no com.coreos.update1 API, no systemd health check, no reboot after a failed health gate")
	}

	tpm, err := openTPM(o.tpm)
	if err != nil {
		return err
	}
	if tpm != nil {
		defer tpm.Close()
		host.TPM = tpm
	}
	a, err := updated.New(host, cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func readID(root fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return "", fmt.Errorf("read /%s: %w", name, err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("/%s holds no id", name)
	}
	return id, nil
}

func openTPM(spec string) (transport.TPMCloser, error) {
	switch {
	case spec == "none":
		return nil, nil
	case spec == "auto":
		if _, err := os.Stat("/dev/tpmrm0"); err != nil {
			return nil, nil
		}
		spec = "/dev/tpmrm0"
	case strings.HasPrefix(spec, "unix:"):
		t, err := linuxudstpm.Open(strings.TrimPrefix(spec, "unix:"))
		if err != nil {
			return nil, fmt.Errorf("open TPM socket %s: %w", spec, err)
		}
		return t, nil
	}
	t, err := linuxtpm.Open(spec)
	if err != nil {
		return nil, fmt.Errorf("open TPM %s: %w (use --tpm none to keep the floor in a file)", spec, err)
	}
	return t, nil
}

// noReboot is the reboot action without D-Bus.
type noReboot struct{}

func (noReboot) Reboot(context.Context) error {
	return errors.New("cannot reboot: updated runs without D-Bus (--bus none); reboot the host by hand")
}
