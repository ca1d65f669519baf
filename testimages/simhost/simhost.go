package simhost

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated"
)

// Options describe a simulated host.
type Options struct {
	// Version and Board of the /usr image in USR-A when the disk is built.
	Version, Board string
	// DiskSize of the built disk; 0: testimages.MinDiskSize (21 MiB slots).
	DiskSize int64
	// Disk, when set, is an existing disk image copied into Dir instead of building one
	// (building the same disk for many hosts once is much faster).
	Disk string
	// Server is the Omaha update URL written to update.conf; Group its GROUP.
	Server, Group string
	// Conf lines are appended to update.conf (e.g. "HEALTH_TIMEOUT=30s").
	Conf []string
	// Trust is the host's trust root (written to etc/trust.json); nil: none.
	Trust *payload.TrustRoot
	// MachineID; "": a random one.
	MachineID string
	// TPM, when set, keeps the floor and measures images (the simulator or swtpm).
	TPM transport.TPM
	// Clock for the agent; nil: real time.
	Clock updated.Clock
}

// Host is one simulated machine.
type Host struct {
	Dir       string
	DiskPath  string
	MachineID string
	tpm       transport.TPM
	clk       updated.Clock

	mu      sync.Mutex
	bootID  string
	boots   int
	slot    partition.Slot
	rel     testimages.Release
	reboots int
	stop    context.CancelFunc // stops the running agent (a reboot)
	pending bool               // a reboot was requested and not yet done
}

// New prepares a host in dir (created if needed) and boots it once.
func New(ctx context.Context, dir string, o Options) (*Host, error) {
	if o.Board == "" {
		o.Board = testimages.DefaultBoard
	}
	if o.DiskSize == 0 {
		o.DiskSize = testimages.MinDiskSize
	}
	if o.Group == "" {
		o.Group = "stable"
	}
	if o.MachineID == "" {
		o.MachineID = randomHex(16)
	}
	h := &Host{Dir: dir, DiskPath: filepath.Join(dir, "disk.img"), MachineID: o.MachineID, tpm: o.TPM, clk: o.Clock}
	for _, d := range []string{"state", "etc/health.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("simhost: %w", err)
		}
	}
	var err error
	if o.Disk != "" {
		err = copyFile(o.Disk, h.DiskPath)
	} else {
		err = testimages.BuildDisk(ctx, h.DiskPath, testimages.DiskOptions{Version: o.Version, Board: o.Board, Size: o.DiskSize})
	}
	if err != nil {
		return nil, fmt.Errorf("simhost: disk: %w", err)
	}
	conf := fmt.Sprintf("SERVER=%s\nGROUP=%s\n", o.Server, o.Group)
	for _, l := range o.Conf {
		conf += l + "\n"
	}
	if err := os.WriteFile(h.ConfPath(), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("simhost: %w", err)
	}
	if o.Trust != nil {
		b, err := o.Trust.Marshal()
		if err != nil {
			return nil, fmt.Errorf("simhost: trust root: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "etc/trust.json"), b, 0o644); err != nil {
			return nil, fmt.Errorf("simhost: %w", err)
		}
	}
	if _, _, err := h.Boot(); err != nil {
		return nil, err
	}
	return h, nil
}

func copyFile(src, dst string) error {
	// A sparse copy would be nicer; disk images of simulated hosts are small.
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func newBootID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:]
}

// ConfPath is the host's update.conf.
func (h *Host) ConfPath() string { return filepath.Join(h.Dir, "etc/update.conf") }

// HealthDir is the host's health.d directory.
func (h *Host) HealthDir() string { return filepath.Join(h.Dir, "etc/health.d") }

// StateDir is the agent's state directory.
func (h *Host) StateDir() string { return filepath.Join(h.Dir, "state") }

// Boot emulates a boot: the boot loader chooses a slot (and writes its tries counter), the
// machine gets a new boot id, and the release is read from the slot's filesystem. It fails
// when no slot can boot (a bricked machine).
func (h *Host) Boot() (partition.Slot, testimages.Release, error) {
	s, rel, err := testimages.Boot(h.DiskPath)
	if err != nil {
		return s, rel, fmt.Errorf("simhost: boot: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.boots++
	h.bootID, h.slot, h.rel, h.pending = newBootID(), s, rel, false
	return s, rel, nil
}

// Booted returns the slot and release of the current boot, and the number of boots so far.
func (h *Host) Booted() (partition.Slot, testimages.Release, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.slot, h.rel, h.boots
}

// BootID is the current boot's id.
func (h *Host) BootID() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bootID
}

// Reboots is the number of reboots asked for (by the agent or by Reboot's other callers).
func (h *Host) Reboots() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reboots
}

// ErrRebooted is returned by Run when the machine went down for a reboot.
var ErrRebooted = errors.New("simhost: the host rebooted")

// Reboot is the host's reboot action (the agent's after a failed health gate; a reboot
// coordinator's in a fleet): it stops the running agent. The machine boots again in Live, or
// when the caller of Run calls Boot.
func (h *Host) Reboot(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reboots++
	h.pending = true
	if h.stop != nil {
		h.stop()
	}
	return nil
}

// RebootPending reports whether a reboot was asked for and the host has not booted since.
func (h *Host) RebootPending() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pending
}

// OpenDisk opens the host's disk (updated.DiskOpener).
func (h *Host) OpenDisk() (*partition.Disk, error) { return partition.Open(h.DiskPath) }

// bootView is the agent's view of one boot (updated.BootFinder).
type bootView struct{ h *Host }

func (b bootView) Booted(_ context.Context, d *partition.Disk) (partition.Slot, updated.Release, error) {
	b.h.mu.Lock()
	label, rel := b.h.slot.Label, b.h.rel
	b.h.mu.Unlock()
	s, err := d.SlotByLabel(label)
	return s, updated.Release{ID: rel.ID, Version: rel.Version, Board: rel.Board}, err
}

// probe is systemd as the booted image would run it (health.Probe).
type probe struct{ h *Host }

// BrokenUnit is the unit that fails on a broken image.
const BrokenUnit = "twinslot-broken.service"

func (p probe) SystemState(context.Context) (string, error) {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	if p.h.rel.Broken {
		return "degraded", nil
	}
	return "running", nil
}

func (p probe) FailedUnits(ctx context.Context) ([]string, error) {
	if s, _ := p.SystemState(ctx); s == "degraded" {
		return []string{BrokenUnit}, nil
	}
	return nil, nil
}

// AgentHost is the updated.Host of the current boot.
func (h *Host) AgentHost() updated.Host {
	h.mu.Lock()
	defer h.mu.Unlock()
	return updated.Host{
		Disk: h, Boot: bootView{h}, Reboot: h, System: probe{h}, TPM: h.tpm, Clock: h.clk,
		MachineID: h.MachineID, BootID: h.bootID,
		Paths: updated.Paths{
			StateDir: h.StateDir(), Config: []string{h.ConfPath()},
			TrustRoots: []string{filepath.Join(h.Dir, "etc/trust.json")}, HealthDir: h.HealthDir(),
		},
	}
}

// Run runs the agent for the current boot until ctx ends (nil), the agent fails (its error)
// or the machine reboots (ErrRebooted; call Boot, then Run again).
func (h *Host) Run(ctx context.Context, cfg updated.Config) error {
	a, err := updated.New(h.AgentHost(), cfg)
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	h.mu.Lock()
	if h.pending {
		h.mu.Unlock()
		return ErrRebooted
	}
	h.stop = cancel
	h.mu.Unlock()
	err = a.Run(actx)
	h.mu.Lock()
	h.stop = nil
	pending := h.pending
	h.mu.Unlock()
	switch {
	case pending:
		return ErrRebooted
	case err != nil:
		return err
	}
	return nil
}

// Live runs the machine until ctx ends: the agent, and after every reboot a new boot and a
// new agent. It returns nil when ctx ends, or the first error that is not a reboot (an agent
// failure, or a machine that no longer boots).
func (h *Host) Live(ctx context.Context, cfg updated.Config) error {
	for {
		err := h.Run(ctx, cfg)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, ErrRebooted) {
			return err
		}
		if _, _, err := h.Boot(); err != nil {
			return err
		}
	}
}

// Slots reads the disk's slots (read-only).
func (h *Host) Slots() (map[string]partition.Slot, error) {
	d, err := partition.Open(h.DiskPath, partition.ReadOnly())
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ss, err := d.Slots()
	if err != nil {
		return nil, err
	}
	out := make(map[string]partition.Slot, len(ss))
	for _, s := range ss {
		out[s.Label] = s
	}
	return out, nil
}
