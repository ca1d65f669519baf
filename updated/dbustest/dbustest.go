package dbustest

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// Daemon is a running private bus.
type Daemon struct {
	Addr string // the bus address, for dbus.Connect and --bus flags
}

// New starts `dbus-daemon --session` on a socket in t.TempDir() and stops it at cleanup. It skips
// the test when dbus-daemon is not installed (CI installs the dbus package).
func New(t testing.TB) *Daemon {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("dbus-daemon not installed (apt-get install dbus); skipping the D-Bus test")
	}
	sock := filepath.Join(t.TempDir(), "bus")
	cmd := exec.Command(bin, "--session", "--nofork", "--nopidfile", "--nosyslog",
		"--address=unix:path="+sock, "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case addr, ok := <-lines:
		if !ok || !strings.HasPrefix(addr, "unix:") {
			t.Fatalf("dbus-daemon printed no address (%q)", addr)
		}
		return &Daemon{Addr: strings.TrimSpace(addr)}
	case <-time.After(30 * time.Second):
		t.Fatal("dbus-daemon did not start within 30s")
	}
	return nil
}

// Conn opens a new connection to the bus, closed at cleanup.
func (d *Daemon) Conn(t testing.TB) *dbus.Conn {
	t.Helper()
	c, err := dbus.Connect(d.Addr)
	if err != nil {
		t.Fatalf("connect to private bus: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
