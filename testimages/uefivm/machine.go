package uefivm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twinslot/twinslot/testimages/tailbuf"
)

// Defaults and limits.
const (
	DefaultMemoryMB = 1024
	DefaultCPUs     = 1
	DefaultQEMU     = "qemu-system-x86_64"
	// MaxTail is how much of the console and of QEMU's stderr a Run keeps for error reports;
	// everything else streams to Machine.Console and is not buffered.
	MaxTail = 64 << 10
	// swtpmStartup bounds the wait for swtpm's control socket.
	swtpmStartup = 10 * time.Second
	// stopGrace is how long QEMU's or swtpm's output pipes may stay open after they exit,
	// and how long swtpm gets to save its state after SIGTERM.
	stopGrace = 5 * time.Second
)

// Debian's OVMF firmware (package ovmf): the 4 MiB code image, loaded read-only, and the
// template of the variable store, copied per machine.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// ErrMissing is what every *MissingError is (errors.Is): a tool or firmware file is not
// installed. Tests turn it into t.Skip.
var ErrMissing = errors.New("uefivm: not installed")

// ErrKilled is what Run.Wait returns after Kill (a power cut, not a clean exit).
var ErrKilled = errors.New("uefivm: machine killed")

// MissingError names what is missing and the Debian package that provides it.
type MissingError struct {
	What    string // a command or file
	Package string // the Debian package to install
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("uefivm: %s not found; install the Debian package %s (apt-get install --no-install-recommends %s)", e.What, e.Package, e.Package)
}

// Is makes errors.Is(err, ErrMissing) true.
func (e *MissingError) Is(target error) bool { return target == ErrMissing }

// Forward is one guestfwd rule: a guest TCP connection to GuestAddr is carried to HostAddr,
// which must be a loopback address.
type Forward struct {
	GuestAddr string // "10.0.2.100:80"
	HostAddr  string // "127.0.0.1:PORT"
}

// Machine is a q35 UEFI virtual machine booting raw disk images under OVMF.
type Machine struct {
	Disks []string // raw images; Disks[0] is the boot disk; each is a virtio-blk device, in order
	// BlockSizes optionally gives the logical (and physical) block size of Disks[i], e.g.
	// 4096 for a 4Kn disk; missing entries and 0 mean 512.
	BlockSizes []int
	MemoryMB   int // 0: DefaultMemoryMB
	CPUs       int // 0: DefaultCPUs
	// VarsFile is the UEFI variable store, owned by the caller: created from OVMFVars when it
	// does not exist, kept across boots. "": a fresh copy per Start, removed afterwards.
	VarsFile string
	// TPMState, when set, gives the machine a TPM 2.0 (swtpm) whose state lives in this
	// directory (created when missing) and is kept across boots.
	TPMState string
	// Forwards are the only network the guest gets: user networking with restrict=on and
	// one guestfwd per entry, each connection carried by its own socat process. Without
	// Forwards the machine has no network device at all.
	Forwards []Forward
	// Console receives the serial console (OVMF, GRUB and the guest's ttyS0) as it comes.
	Console io.Writer
	KVM     bool   // use -accel kvm when /dev/kvm can be opened; else (and by default) TCG
	QEMU    string // "": DefaultQEMU
}

// FindOVMF returns Debian's OVMF code and variable-store template, or a *MissingError
// naming the package ovmf.
func FindOVMF() (code, vars string, err error) {
	for _, f := range []string{OVMFCode, OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			return "", "", &MissingError{What: f, Package: "ovmf"}
		}
	}
	return OVMFCode, OVMFVars, nil
}

func (m *Machine) qemu() string {
	if m.QEMU == "" {
		return DefaultQEMU
	}
	return m.QEMU
}

// Check reports the first tool or file the machine needs that is not installed, as a
// *MissingError.
func (m *Machine) Check() error {
	if _, err := exec.LookPath(m.qemu()); err != nil {
		return &MissingError{What: m.qemu(), Package: "qemu-system-x86"}
	}
	if _, _, err := FindOVMF(); err != nil {
		return err
	}
	if m.TPMState != "" {
		if _, err := exec.LookPath("swtpm"); err != nil {
			return &MissingError{What: "swtpm", Package: "swtpm swtpm-tools"}
		}
	}
	if len(m.Forwards) > 0 {
		if _, err := exec.LookPath("socat"); err != nil {
			return &MissingError{What: "socat", Package: "socat"}
		}
	}
	return nil
}

// Run is one boot of a Machine: from Start until QEMU exits.
type Run struct {
	cmd       *exec.Cmd
	tpm       *exec.Cmd
	tpmExited chan error // swtpm's Wait result, put back by each reader
	tmp       string
	console   *tailbuf.Buffer
	stderr    *tailbuf.Buffer
	killed    atomic.Bool
	done      chan struct{}
	err       error
}

// Start checks the machine, starts swtpm (with TPMState) and QEMU with -no-reboot, so that
// a guest reboot or power-off ends the process. Cancelling ctx kills the machine.
func (m *Machine) Start(ctx context.Context) (*Run, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	if len(m.Disks) == 0 {
		return nil, errors.New("uefivm: no disks; Disks[0] must be the boot disk")
	}
	for _, d := range m.Disks {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("uefivm: disk: %w", err)
		}
	}
	if len(m.BlockSizes) > len(m.Disks) {
		return nil, fmt.Errorf("uefivm: %d block sizes for %d disks", len(m.BlockSizes), len(m.Disks))
	}
	for _, bs := range m.BlockSizes {
		if bs != 0 && (bs < 512 || bs > 65536 || bs&(bs-1) != 0) {
			return nil, fmt.Errorf("uefivm: block size %d: want a power of two from 512 to 65536 (0 means 512)", bs)
		}
	}
	for _, f := range m.Forwards {
		if err := f.check(); err != nil {
			return nil, err
		}
	}
	tmp, err := os.MkdirTemp("", "uefivm-")
	if err != nil {
		return nil, fmt.Errorf("uefivm: %w", err)
	}
	r := &Run{tmp: tmp, console: tailbuf.New(MaxTail), stderr: tailbuf.New(MaxTail), done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			r.stopTPM()
			os.RemoveAll(tmp)
		}
	}()

	vars, err := m.vars(tmp)
	if err != nil {
		return nil, err
	}
	var tpmSock string
	if m.TPMState != "" {
		if tpmSock, err = r.startTPM(ctx, m.TPMState); err != nil {
			return nil, err
		}
	}
	args := m.Args(vars, tpmSock)
	cmd := exec.CommandContext(ctx, m.qemu(), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The whole process group: QEMU and the socat forwarders it started.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	var out io.Writer = r.console
	if m.Console != nil {
		out = io.MultiWriter(r.console, lenient{m.Console})
	}
	cmd.Stdout = out
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("uefivm: start %s: %w", m.qemu(), err)
	}
	r.cmd = cmd
	ok = true
	go r.wait()
	return r, nil
}

func (r *Run) wait() {
	err := r.cmd.Wait()
	r.stopTPM()
	os.RemoveAll(r.tmp)
	switch {
	case r.killed.Load():
		r.err = ErrKilled
	case err != nil:
		r.err = fmt.Errorf("uefivm: qemu: %w; stderr: %s", err, strings.TrimSpace(string(r.stderr.Bytes())))
	}
	close(r.done)
}

// Wait waits for QEMU to exit: nil after a guest reboot or power-off, ErrKilled after Kill,
// another error when QEMU failed (with the end of its stderr).
func (r *Run) Wait() error {
	<-r.done
	return r.err
}

// Done is closed when QEMU has exited.
func (r *Run) Done() <-chan struct{} { return r.done }

// Kill cuts the power: SIGKILL to QEMU (and its forwarders); swtpm is stopped after it.
// It returns once QEMU is gone.
func (r *Run) Kill() error {
	r.killed.Store(true)
	err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.done
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("uefivm: kill qemu: %w", err)
	}
	return nil
}

// Console is the end of the serial console output (at most MaxTail bytes).
func (r *Run) Console() []byte { return r.console.Bytes() }

// Args is the QEMU command line for the machine with the given variable store and, when
// tpmSock is not empty, swtpm's control socket.
func (m *Machine) Args(vars, tpmSock string) []string {
	mem, cpus := m.MemoryMB, m.CPUs
	if mem <= 0 {
		mem = DefaultMemoryMB
	}
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	// Under TCG the "max" CPU model offers the guest SHA-NI, AES-NI and AVX2, which QEMU
	// runs as native helpers: a guest hashing a /usr slot runs several times faster than on
	// the default qemu64 model. Under KVM, the host's CPU.
	accel, cpu := "tcg", "max"
	if m.KVM && kvmUsable() {
		accel, cpu = "kvm", "host"
	}
	a := []string{
		"-machine", "q35", "-accel", accel, "-cpu", cpu, "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-nographic", "-no-reboot", "-serial", "stdio",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + optEscape(OVMFCode),
		"-drive", "if=pflash,format=raw,unit=1,file=" + optEscape(vars),
		"-device", "virtio-rng-pci",
	}
	for i, d := range m.Disks {
		id := "disk" + strconv.Itoa(i)
		a = append(a, "-drive", "if=none,format=raw,id="+id+",file="+optEscape(d))
		// Every disk gets a boot index: OVMF connects only the devices QEMU lists in its boot
		// order, and GRUB sees only connected disks. Disks[0] comes first.
		dev := "virtio-blk-pci,drive=" + id + ",bootindex=" + strconv.Itoa(i)
		if i < len(m.BlockSizes) && m.BlockSizes[i] != 0 && m.BlockSizes[i] != 512 {
			bs := strconv.Itoa(m.BlockSizes[i])
			dev += ",logical_block_size=" + bs + ",physical_block_size=" + bs
		}
		a = append(a, "-device", dev)
	}
	if len(m.Forwards) > 0 {
		nd := "user,id=net0,restrict=on"
		for _, f := range m.Forwards {
			nd += ",guestfwd=tcp:" + f.GuestAddr + "-cmd:" + optEscape("socat - TCP:"+f.HostAddr)
		}
		// No option ROM: the firmware must not try a network boot.
		a = append(a, "-netdev", nd, "-device", "virtio-net-pci,netdev=net0,romfile=")
	}
	if tpmSock != "" {
		a = append(a, "-chardev", "socket,id=chrtpm,path="+optEscape(tpmSock),
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	}
	return a
}

// vars returns the variable store to use: VarsFile (created from the template when missing)
// or a fresh copy in dir.
func (m *Machine) vars(dir string) (string, error) {
	_, tmpl, err := FindOVMF()
	if err != nil {
		return "", err
	}
	path := m.VarsFile
	if path == "" {
		path = filepath.Join(dir, "OVMF_VARS.fd")
	} else if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	b, err := os.ReadFile(tmpl)
	if err != nil {
		return "", fmt.Errorf("uefivm: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", fmt.Errorf("uefivm: variable store: %w", err)
	}
	return path, nil
}

// startTPM starts swtpm on a control socket in the run's temporary directory and waits for
// the socket to appear.
func (r *Run) startTPM(ctx context.Context, state string) (string, error) {
	if err := os.MkdirAll(state, 0o700); err != nil {
		return "", fmt.Errorf("uefivm: TPM state: %w", err)
	}
	sock := filepath.Join(r.tmp, "swtpm.sock")
	log := tailbuf.New(MaxTail)
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--ctrl", "type=unixio,path="+sock, "--terminate")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("uefivm: start swtpm: %w", err)
	}
	r.tpm = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.tpmExited = exited
	deadline := time.NewTimer(swtpmStartup)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock, nil
		}
		select {
		case err := <-exited:
			exited <- err
			return "", fmt.Errorf("uefivm: swtpm exited at start (%v): %s", err, strings.TrimSpace(string(log.Bytes())))
		case <-deadline.C:
			return "", fmt.Errorf("uefivm: swtpm made no control socket within %s: %s", swtpmStartup, strings.TrimSpace(string(log.Bytes())))
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// stopTPM asks swtpm to save and exit (SIGTERM), and kills it after stopGrace. swtpm also
// exits by itself (--terminate) when QEMU closes the control connection.
func (r *Run) stopTPM() {
	if r.tpm == nil {
		return
	}
	select {
	case err := <-r.tpmExited:
		r.tpmExited <- err
		return
	default:
	}
	_ = r.tpm.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case err := <-r.tpmExited:
		r.tpmExited <- err
	case <-t.C:
		_ = r.tpm.Process.Kill()
	}
}

func (f Forward) check() error {
	gh, gp, err := net.SplitHostPort(f.GuestAddr)
	if err != nil || net.ParseIP(gh).To4() == nil || gp == "" {
		return fmt.Errorf("uefivm: forward guest address %q: want IPv4:PORT such as 10.0.2.100:80", f.GuestAddr)
	}
	hh, hp, err := net.SplitHostPort(f.HostAddr)
	ip := net.ParseIP(hh)
	if err != nil || ip == nil || !ip.IsLoopback() || hp == "" {
		return fmt.Errorf("uefivm: forward host address %q: want a loopback address such as 127.0.0.1:8080 (the guest may reach nothing else)", f.HostAddr)
	}
	return nil
}

// optEscape escapes a value inside a QEMU option list (commas are doubled).
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

func kvmUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// lenient hides the caller's write errors from QEMU's output copy, which would otherwise
// stop the copy and fail the run.
type lenient struct{ w io.Writer }

func (l lenient) Write(p []byte) (int, error) {
	l.w.Write(p) //nolint:errcheck // the console is best effort
	return len(p), nil
}
