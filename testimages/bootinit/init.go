package bootinit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/updated/health"
)

// Defaults and limits.
const (
	DefaultDiskWait     = 60 * time.Second // for the disk to appear after the modules loaded
	DefaultGateDeadline = 30 * time.Second
	pollInterval        = 50 * time.Millisecond
	maxOSRelease        = 64 << 10
	// ModulesDir holds the modules to load, relative to Root: NN-name.ko, loaded in name order.
	ModulesDir = "lib/modules"
	// UsrDir is where the chosen slot is mounted, relative to Root.
	UsrDir = "usr"
)

// Init is one boot's configuration.
type Init struct {
	Root         string        // the root of the initramfs: "/" under the kernel, a directory in tests
	Sys          System        // the kernel
	DiskWait     time.Duration // 0: DefaultDiskWait
	GateDeadline time.Duration // 0: DefaultGateDeadline
	Logger       *slog.Logger  // nil: discard
}

// Run is PID 1: it mounts proc, sysfs and devtmpfs under Root, boots (see Boot), writes the
// result line to console and powers off. It returns (an exit status) only when powering off
// failed. Progress is logged to console unless Logger is set.
func (in *Init) Run(ctx context.Context, console io.Writer) int {
	if in.Logger == nil {
		in.Logger = slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "proc", "proc"}, {"sysfs", "sys", "sysfs"}, {"devtmpfs", "dev", "devtmpfs"},
	} {
		dir := filepath.Join(in.Root, m.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			in.Logger.Warn("early mount", "err", err)
		}
		if err := in.Sys.Mount(m.src, dir, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			in.Logger.Warn("early mount", "err", err)
		}
	}
	res := in.Boot(ctx)
	fmt.Fprintln(console, res.Line())
	if err := in.Sys.PowerOff(); err != nil {
		fmt.Fprintln(console, "bootinit:", err)
		return 1
	}
	return 0
}

// Boot does one boot up to (not including) power-off and returns its result. It never
// panics on a bad disk: every failure ends up in the Result.
func (in *Init) Boot(ctx context.Context) (res Result) {
	log := in.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	defer func() {
		if up, err := in.Sys.Uptime(); err == nil {
			res.Uptime = up
		}
	}()
	fail := func(err error) Result {
		res.Error = err.Error()
		return res
	}
	failed, err := in.loadModules(log)
	if err != nil {
		return fail(err)
	}
	disk, name, err := in.findDisk(ctx, log)
	if err != nil {
		if len(failed) > 0 {
			err = fmt.Errorf("%w; modules that failed to load: %s", err, strings.Join(failed, "; "))
		}
		return fail(err)
	}
	defer disk.Close()

	slot, err := disk.NextBoot()
	if err != nil {
		return fail(fmt.Errorf("choose a slot (gptprio.next): %w", err))
	}
	res.Slot, res.Partition, res.PartUUID = slot.Label, slot.Number, slot.PartUUID
	// Report the bits as read back from the disk, so the result shows what gptprio.next wrote.
	onDisk, err := disk.SlotByNumber(slot.Number)
	if err != nil {
		return fail(fmt.Errorf("read back %s after gptprio.next: %w", slot.Label, err))
	}
	if onDisk.Attr != slot.Attr {
		return fail(fmt.Errorf("gptprio.next chose %s %v but the table holds %v", slot.Label, slot.Attr, onDisk.Attr))
	}
	res.Priority, res.Tries, res.Successful = onDisk.Attr.Priority(), onDisk.Attr.Tries(), onDisk.Attr.Successful()
	log.Info("gptprio.next", "disk", disk.Path(), "slot", slot.Label, "attr", slot.Attr.String())

	rel, gate, err := in.checkSlot(ctx, log, name, slot)
	res.Version = rel.Version
	switch {
	case err != nil:
		res.Health = err.Error()
	default:
		res.Healthy, res.Health = gate.Passed, gate.Summary()
	}
	log.Info("health gate", "slot", slot.Label, "version", rel.Version, "passed", res.Healthy, "summary", res.Health)

	if res.Healthy {
		if err := disk.MarkGood(slot); err != nil {
			return fail(fmt.Errorf("mark %s good: %w", slot.Label, err))
		}
		res.Committed = true
	} else {
		if err := disk.MarkBad(slot); err != nil {
			return fail(fmt.Errorf("mark %s bad: %w", slot.Label, err))
		}
		res.MarkedBad = true
	}
	return res
}

// loadModules loads lib/modules/*.ko in name order. Like modprobe with a soft dependency, a
// module that fails to load (say crc32c_intel on a CPU without SSE4.2) does not stop the
// others; the failures are returned for the error report in case the disk never shows up.
func (in *Init) loadModules(log *slog.Logger) (failed []string, err error) {
	dir := filepath.Join(in.Root, ModulesDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // everything needed is built into the kernel
	}
	if err != nil {
		return nil, fmt.Errorf("list modules: %w", err)
	}
	for _, e := range ents { // os.ReadDir sorts by name
		if !strings.HasSuffix(e.Name(), ".ko") {
			continue
		}
		if err := in.Sys.LoadModule(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("module did not load", "file", e.Name(), "err", err)
			failed = append(failed, err.Error())
			continue
		}
		log.Info("loaded module", "file", e.Name())
	}
	return failed, nil
}

// findDisk waits for a block device with /usr slots and opens it read-write.
func (in *Init) findDisk(ctx context.Context, log *slog.Logger) (*partition.Disk, string, error) {
	wait := in.DiskWait
	if wait <= 0 {
		wait = DefaultDiskWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var seen []string
	for {
		names, _ := blockDevices(filepath.Join(in.Root, "sys/block"))
		for _, n := range names {
			d, err := partition.Open(filepath.Join(in.Root, "dev", n))
			if err == nil {
				if _, err = d.Slots(); err == nil {
					return d, n, nil
				}
				d.Close()
			}
			if !slices.Contains(seen, n) {
				seen = append(seen, n)
				log.Info("not a twinslot disk", "dev", n, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("no disk with /usr slots appeared within %s (block devices: %v); is the disk attached (virtio) and its driver built in or packed as a module?", wait, seen)
		case <-time.After(pollInterval):
		}
	}
}

// blockDevices lists whole disks, leaving out RAM, loop and optical devices.
func blockDevices(sysBlock string) ([]string, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") || strings.HasPrefix(n, "sr") {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// partitionDevice finds the device node of partition number of disk via sysfs
// (sys/block/DISK/PART/partition holds the number), waiting for it to appear.
func (in *Init) partitionDevice(ctx context.Context, disk string, number int) (string, error) {
	sysDisk := filepath.Join(in.Root, "sys/block", disk)
	for {
		ents, _ := os.ReadDir(sysDisk)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(sysDisk, e.Name(), "partition"))
			if err != nil {
				continue
			}
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n == number {
				dev := filepath.Join(in.Root, "dev", e.Name())
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("partition %d of %s has no device node: %w", number, disk, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// checkSlot mounts the slot read-only, reads its release and runs the health gate. An error
// means the slot could not even be looked at (not mountable, no os-release): not healthy.
func (in *Init) checkSlot(ctx context.Context, log *slog.Logger, disk string, slot partition.Slot) (testimages.Release, health.Result, error) {
	wctx, cancel := context.WithTimeout(ctx, orDefault(in.DiskWait, DefaultDiskWait))
	dev, err := in.partitionDevice(wctx, disk, slot.Number)
	cancel()
	if err != nil {
		return testimages.Release{}, health.Result{}, err
	}
	usr := filepath.Join(in.Root, UsrDir)
	if err := os.MkdirAll(usr, 0o755); err != nil {
		return testimages.Release{}, health.Result{}, fmt.Errorf("mount point: %w", err)
	}
	if err := in.Sys.Mount(dev, usr, "ext4", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return testimages.Release{}, health.Result{}, fmt.Errorf("%s holds no mountable /usr: %w", slot.Label, err)
	}
	defer func() {
		if err := in.Sys.Unmount(usr); err != nil {
			log.Warn("unmount", "err", err)
		}
	}()
	rel, err := readRelease(filepath.Join(usr, testimages.ReleasePath))
	if err != nil {
		return rel, health.Result{}, fmt.Errorf("%s: /usr/%s: %w", slot.Label, testimages.ReleasePath, err)
	}
	gate := health.Gate{
		System:   imageProbe{usr: usr},
		Deadline: orDefault(in.GateDeadline, DefaultGateDeadline),
		Retry:    time.Second,
		Logger:   log,
	}
	return rel, gate.Run(ctx), nil
}

func readRelease(path string) (testimages.Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return testimages.Release{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxOSRelease+1))
	if err != nil {
		return testimages.Release{}, err
	}
	return testimages.ParseRelease(b)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
