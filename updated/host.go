package updated

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/sys/unix"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/partition/osrelease"
	"github.com/twinslot/twinslot/updated/health"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// Host is everything the agent needs from the machine it runs on. updated's main wires the
// real implementations (SystemDisk, logind, systemd, /dev/tpmrm0); testimages/simhost wires a
// simulated machine (a disk image, an emulated boot loader, a probe that fails on a broken
// image), so the same Agent.Run serves both.
type Host struct {
	// Disk opens the disk that holds the /usr slots, read-write.
	Disk DiskOpener
	// Boot says which slot of the disk runs and what it runs.
	Boot BootFinder
	// Reboot reboots the machine (after a failed health gate). It returns once the reboot was
	// accepted; the agent is then expected to be stopped (its context cancelled).
	Reboot Rebooter
	// System is systemd's view for the health gate; nil skips that check.
	System health.Probe
	// TPM keeps the anti-rollback floor and measures booted images; nil: a file floor only.
	TPM transport.TPM
	// Clock is the time source; nil: the real clock.
	Clock Clock
	// Uptime is the time since the machine booted, on a clock every process of one boot shares
	// and no step of the wall clock moves (CLOCK_BOOTTIME): what times the health gate across
	// restarts of the agent. nil: CLOCK_BOOTTIME with the real clock, else Clock's reading (a
	// test's clock then times it alone).
	Uptime func() time.Duration
	// Rand returns a uniform int64 in [0, n) for schedule jitter; nil: math/rand/v2.
	Rand Rand
	// MachineID is /etc/machine-id (32 lowercase hex); BootID the kernel's boot id (a UUID,
	// new on every boot).
	MachineID, BootID string
	Paths             Paths
	// HTTP sends Omaha requests and payload downloads; nil: clients with sane timeouts.
	HTTP *http.Client
	// Notify sends sd_notify messages ("READY=1", "STATUS=…", "WATCHDOG=1"); nil: none.
	Notify func(state string) error
}

// Paths are the files the agent reads and writes.
type Paths struct {
	// StateDir holds the state file and the floor file (/var/lib/twinslot).
	StateDir string
	// Config is the update.conf search path, a later file winning key by key
	// (updateconf.DefaultPaths, or the --config file).
	Config []string
	// Environ overrides update.conf keys (main passes os.Environ()).
	Environ []string
	// TrustRoots are candidate trust root files; the first that exists is used (the admin's
	// /etc/twinslot/trust.json, then the image's /usr/share/twinslot/trust.json).
	TrustRoots []string
	// HealthDir holds the health.d executables (/etc/twinslot/health.d).
	HealthDir string
	// ESPDir is where the EFI system partition is mounted (/boot). When ESPDir/twinslot is a
	// directory, an install copies the new slot's kernel and initrd there before the flip
	// (partition/esp); otherwise, or when empty, the ESP is not touched.
	ESPDir string
}

// DefaultPaths are the paths on a host.
func DefaultPaths() Paths {
	return Paths{
		StateDir:   "/var/lib/twinslot",
		Config:     updateconf.DefaultPaths(),
		TrustRoots: []string{"/etc/twinslot/trust.json", "/usr/share/twinslot/trust.json"},
		HealthDir:  "/etc/twinslot/health.d",
		ESPDir:     "/boot",
	}
}

// DiskOpener opens the disk holding the /usr slots.
type DiskOpener interface {
	OpenDisk() (*partition.Disk, error)
}

// BootFinder tells which slot of d the running system booted and the release it runs.
type BootFinder interface {
	Booted(ctx context.Context, d *partition.Disk) (partition.Slot, Release, error)
}

// Rebooter reboots the machine.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Clock is the agent's time source.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// Release is what the booted /usr says about itself (its lib/os-release).
type Release struct {
	ID, Version, Board string
	OEM, OEMVersion    string // from oem-release, when there is one
}

// ParseRelease reads the booted /usr's os-release with the one parser (partition/osrelease):
// ID, VERSION_ID (else VERSION) and BOARD (else FLATCAR_BOARD), all required.
func ParseRelease(name string, data []byte) (Release, error) {
	r, err := osrelease.Parse(data)
	if err != nil {
		return Release{}, fmt.Errorf("updated: %s: %w", name, err)
	}
	return Release{ID: r.ID, Version: r.Version, Board: r.Board}, nil
}

// SystemDisk is the real host: the booted /usr is found from the kernel command line or the
// mount table (partition.FindBooted), its disk opened, and the release read from
// /usr/lib/os-release (and /usr/share/oem/oem-release).
type SystemDisk struct {
	// Root is the host's "/" (os.DirFS("/")).
	Root fs.FS
	// Path overrides the disk device (updated --disk); "" finds it from the booted /usr.
	Path string
}

// OpenDisk opens the disk holding the booted /usr (or Path).
func (s SystemDisk) OpenDisk() (*partition.Disk, error) {
	w, err := partition.FindDisk(s.Root, s.Path)
	if err != nil {
		return nil, fmt.Errorf("updated: find the disk of the booted /usr: %w", err)
	}
	return partition.Open(w.Disk)
}

// Booted returns the booted slot and the release in /usr. The slot is found by the rule every
// tool shares (partition.FindDisk, Where.Active); the agent acts only on a slot the host says
// it booted from, never on a guess.
func (s SystemDisk) Booted(_ context.Context, d *partition.Disk) (partition.Slot, Release, error) {
	w, err := partition.FindDisk(s.Root, s.Path)
	if err != nil {
		return partition.Slot{}, Release{}, fmt.Errorf("updated: find the booted /usr: %w", err)
	}
	slot, booted, err := w.Active(d)
	if err != nil {
		return partition.Slot{}, Release{}, fmt.Errorf("updated: %w", err)
	}
	if !booted {
		return partition.Slot{}, Release{}, fmt.Errorf("updated: %w: the running system did not boot from %s (no usr= on the kernel command line naming one of its slots); run updated on the host that boots it", partition.ErrUnknownSlot, d.Path())
	}
	data, err := readLimited(s.Root, "usr/lib/os-release")
	if err != nil {
		return partition.Slot{}, Release{}, err
	}
	rel, err := ParseRelease("/usr/lib/os-release", data)
	if err != nil {
		return partition.Slot{}, Release{}, err
	}
	for _, p := range []string{"etc/oem-release", "usr/share/oem/oem-release"} {
		if data, err := readLimited(s.Root, p); err == nil {
			if vals, err := osrelease.Values(data); err == nil {
				rel.OEM, rel.OEMVersion = vals["ID"], vals["VERSION_ID"]
				break
			}
		}
	}
	return slot, rel, nil
}

func readLimited(root fs.FS, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("updated: read /%s: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, osrelease.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("updated: read /%s: %w", name, err)
	}
	if len(b) > osrelease.MaxSize {
		return nil, fmt.Errorf("updated: /%s is larger than %d bytes", name, osrelease.MaxSize)
	}
	return b, nil
}

// bootTime reads CLOCK_BOOTTIME, the time since boot (suspend included), which every process of
// a boot shares. Should the kernel refuse it, 0: a gate resumed then gets a fresh deadline, as
// before gates were timed across restarts.
func bootTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
