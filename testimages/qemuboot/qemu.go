package qemuboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twinslot/twinslot/testimages/bootinit"
	"github.com/twinslot/twinslot/testimages/tailbuf"
)

// Defaults and limits of one boot.
const (
	DefaultMemoryMiB   = 256
	DefaultBootTimeout = 5 * time.Minute // software emulation on a busy 2-core machine
	MaxConsole         = 4 << 20         // console output kept per boot
	// KernelCmdline is what the kernel is booted with: the serial console, reboot (and so,
	// with -no-reboot, exit) at once on a panic, and few kernel messages.
	KernelCmdline = "console=ttyS0 panic=-1 quiet"
)

// Machine is a QEMU x86_64 virtual machine that boots the kernel with the bootinit initramfs
// from a raw disk image: no network, no display, the serial console on stdout.
type Machine struct {
	QEMU      string        // qemu-system-x86_64
	Kernel    string        // bzImage
	Initrd    string        // the initramfs (WriteInitramfs)
	MemoryMiB int           // 0: DefaultMemoryMiB
	KVM       bool          // use -accel kvm (else software emulation, TCG)
	Timeout   time.Duration // one boot; 0: DefaultBootTimeout
	Console   io.Writer     // optional: also gets the serial console output as it comes
}

// Boot is the outcome of one boot.
type Boot struct {
	Result  bootinit.Result
	Console []byte        // the serial console output (its last MaxConsole bytes)
	Elapsed time.Duration // QEMU start to exit, as measured on the host
}

// Args is the QEMU command line booting disk.
func (m Machine) Args(disk string) []string {
	mem := m.MemoryMiB
	if mem <= 0 {
		mem = DefaultMemoryMiB
	}
	accel := "tcg"
	if m.KVM {
		accel = "kvm"
	}
	return []string{
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
		"-accel", accel, "-smp", "1", "-m", strconv.Itoa(mem), "-nic", "none",
		"-kernel", m.Kernel, "-initrd", m.Initrd, "-append", KernelCmdline,
		"-drive", "file=" + disk + ",format=raw,if=virtio",
	}
}

// Boot runs QEMU until the init powers the machine off, and returns the result line the init
// printed. It fails when QEMU fails or times out, or when the console holds no result line;
// the Boot returned then still carries the console output for the error report.
func (m Machine) Boot(ctx context.Context, disk string) (Boot, error) {
	abs, err := filepath.Abs(disk)
	if err != nil {
		return Boot{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		return Boot{}, fmt.Errorf("boot: %w", err)
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = DefaultBootTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	console := tailbuf.New(MaxConsole)
	var out io.Writer = console
	if m.Console != nil {
		out = io.MultiWriter(console, m.Console)
	}
	cmd := exec.CommandContext(ctx, m.QEMU, m.Args(abs)...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Run()
	b := Boot{Console: console.Bytes(), Elapsed: time.Since(start)}
	switch {
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return b, fmt.Errorf("boot %s: no power-off within %s (raise the timeout on a slow machine)", disk, timeout)
	case err != nil:
		return b, fmt.Errorf("boot %s: %s: %w", disk, m.QEMU, err)
	}
	if b.Result, err = bootinit.ParseResult(b.Console); err != nil {
		return b, fmt.Errorf("boot %s: %w", disk, err)
	}
	return b, nil
}
