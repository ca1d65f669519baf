package bootinit

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// System is what a boot asks of the kernel. RealSystem is the one PID 1 uses; tests pass
// their own, since they cannot load modules, mount or power off the machine running them.
type System interface {
	// LoadModule loads the kernel module file at path; one already loaded is not an error.
	LoadModule(path string) error
	// Mount mounts source at target (see mount(2)).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Unmount unmounts target.
	Unmount(target string) error
	// Uptime is the time since the kernel started, in seconds.
	Uptime() (float64, error)
	// PowerOff syncs the filesystems and powers the machine off; it returns only on failure.
	PowerOff() error
}

// RealSystem is System on the running kernel (needs CAP_SYS_MODULE, CAP_SYS_ADMIN and
// CAP_SYS_BOOT: PID 1 in an initramfs).
type RealSystem struct{}

// LoadModule loads with finit_module(2), falling back to init_module(2) where finit_module
// is not available.
func (RealSystem) LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			err = unix.InitModule(b, "")
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// Mount calls mount(2).
func (RealSystem) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", source, fstype, target, err)
	}
	return nil
}

// Unmount calls umount(2).
func (RealSystem) Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Uptime reads /proc/uptime.
func (RealSystem) Uptime() (float64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	f, _, _ := strings.Cut(string(b), " ")
	return strconv.ParseFloat(f, 64)
}

// PowerOff syncs and calls reboot(2) with LINUX_REBOOT_CMD_POWER_OFF.
func (RealSystem) PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
