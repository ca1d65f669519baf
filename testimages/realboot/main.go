package realboot

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/tools/cli"
)

const help = `Boots a real host image under QEMU + OVMF (UEFI, our GRUB with gptprio, systemd, updated and
locksmithd) and walks it through an update and a rollback, with omahad (SQLite) and etcd on
127.0.0.1, reached from the guest only through QEMU guestfwd (user networking, restrict=on):

  a. v1 boots from USR-A; updated and locksmithd run under systemd.
  b. v2 is published; the host streams it into USR-B; the power is cut mid-download (kill -9
     of QEMU); v1 boots again and the download resumes.
  c. locksmithd takes the etcd lock and reboots through logind; GRUB picks USR-B (tries 1 → 0
     on disk) and boots its own kernel and initrd; the health gate passes, the slot is
     committed, the lock released, the TPM floor advances, omahad gets 3/2.
  d. A broken v3 is installed into USR-A by its delta section from v2, boots, fails its
     health gate; the host comes back on v2, omahad gets 3/0/1001 then 3/0/44, the host
     keeps its lock and the group halts.
  e. USR-A is put on trial with an initrd that cannot boot: the kernel panics, panic=10
     reboots, and GRUB's tries counter alone brings USR-B back.

Every step is checked from outside (the GPT read from the disk image, the ESP, etcd, omahad,
the guest's TPM state, the serial console). Each boot's console is kept in --dir. Exit 0 only
when every check passed.`

// Env is what e2eboot takes from the process environment.
type Env struct {
	// Cache is mkimage os's cache root when --cache is not given (main passes
	// mkimage.DefaultCache of $TWINSLOT_CACHE and $HOME).
	Cache string
}

// Main is the e2eboot command line with an empty environment (Env.Main).
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Env{}.Main(ctx, args, stdin, stdout, stderr)
}

// Main is the e2eboot command line; it returns 0 when the walk passed, 1 when it did not, 2
// for a bad command line.
func (env Env) Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	stdio := cli.IO{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	fs := stdio.FlagSet("e2eboot", "--bin DIR --grub-efi FILE [--dir D] [--json]", help)
	var o Options
	fs.StringVar(&o.Dir, "dir", "", "keep images, database, payloads and console logs here (required; must be new or empty)")
	fs.StringVar(&o.Bin, "bin", "", "directory with the guest's static binaries: updated, updatectl, locksmithd, locksmithctl")
	fs.StringVar(&o.GrubEFI, "grub-efi", "", "BOOTX64.EFI with the gptprio module (partition/grub/build.sh prints its path)")
	fs.StringVar(&o.Cache, "cache", env.Cache, "mkimage os cache root (the Debian bootstrap; $TWINSLOT_CACHE or ~/.cache/twinslot)")
	fs.Int64Var(&o.Filler, "filler", 96<<20, "bytes of incompressible filler in v2: what the cut download fetches")
	fs.Int64Var(&o.Rate, "rate", 6<<20, "payload bytes per second to the guest, so the power cut lands mid-download")
	fs.DurationVar(&o.BootTimeout, "boot-timeout", 12*time.Minute, "give up on one boot after this long")
	fs.DurationVar(&o.Timeout, "timeout", 50*time.Minute, "give up on the whole walk after this long")
	fs.BoolVar(&o.KVM, "kvm", false, "use KVM (only where /dev/kvm works; the default is TCG)")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout (progress goes to stderr)")
	rest, err := cli.Parse(fs, args)
	if err == nil {
		err = cli.NArgs(rest, 0, 0, "no arguments")
	}
	if err == nil {
		err = o.check()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "e2eboot: %v\nRun 'e2eboot --help' for usage.\n", err)
		return 2
	}
	o.Out = stdout
	if *asJSON {
		o.Out = stderr
	}
	r, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "e2eboot: %v\n", err)
		return 1
	}
	fmt.Fprintln(o.Out)
	r.Print(o.Out)
	if *asJSON {
		if err := cli.PrintJSON(stdout, r); err != nil {
			return 1
		}
	}
	if !r.OK {
		return 1
	}
	return 0
}

func (o *Options) check() error {
	if o.Dir == "" {
		return cli.Usagef("--dir is required")
	}
	if ents, err := os.ReadDir(o.Dir); err == nil && len(ents) > 0 {
		return cli.Usagef("--dir %s is not empty: give a new or empty directory", o.Dir)
	}
	for _, b := range []string{"updated", "updatectl", "locksmithd", "locksmithctl"} {
		if o.Bin == "" {
			return cli.Usagef("--bin is required")
		}
		if _, err := os.Stat(filepath.Join(o.Bin, b)); err != nil {
			return cli.Usagef("--bin %s: %v (make guest-bin builds them)", o.Bin, err)
		}
	}
	if o.Cache == "" {
		return cli.Usagef("--cache is required (no $TWINSLOT_CACHE or $HOME)")
	}
	if o.GrubEFI == "" {
		return cli.Usagef("--grub-efi is required (make grub-efi builds it)")
	}
	if _, err := os.Stat(o.GrubEFI); err != nil {
		return cli.Usagef("--grub-efi: %v", err)
	}
	if o.Filler < 16<<20 || o.Rate <= 0 || o.BootTimeout <= 0 || o.Timeout <= 0 {
		return cli.Usagef("--filler must be at least 16 MiB; --rate and the timeouts positive")
	}
	return nil
}
