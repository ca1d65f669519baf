package faults

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// needFaults skips unless the tier was asked for.
func needFaults(t *testing.T) {
	t.Helper()
	if os.Getenv("TWINSLOT_FAULTS") != "1" {
		t.Skip("fault-injection tier: set TWINSLOT_FAULTS=1 (make faults) to run it")
	}
}

// needTool returns the path of a program, or skips.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: skipping (apt-get install %s; make faults does as root)", name, pkg)
	}
	return p
}

// freePorts returns n loopback ports nobody listened on a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// proc is a real process of the tier: started, killed, stopped, continued and restarted with
// the same arguments, its output appended to a log file.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t *testing.T, dir, name, bin string, args ...string) *proc {
	p := &proc{name: name, bin: bin, args: args, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cmd != nil {
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		t.Fatalf("%s: already running", p.name)
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) { p.stopWith(t, syscall.SIGKILL) }

// stopWith sends sig and waits for the process to exit.
func (p *proc) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		t.Errorf("%s: did not exit within 60s of %v; killed", p.name, sig)
	}
	p.cmd = nil
}

// signal sends sig (SIGSTOP, SIGCONT) to the running process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		t.Fatalf("%s: not running", p.name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
}

// exited reports whether the process ended on its own (it was started and not stopped here).
func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// row is one line of the summary table.
type row struct {
	Fault      string
	Invariants string // the invariants checked, and whether they held
	MaxHolders string
	Lost       string // lost acknowledged events by kind
	Recovery   string
	Notes      string
}

// report logs r and appends it to the summary file, if one is named.
func report(t *testing.T, r row) {
	t.Helper()
	t.Logf("SUMMARY %s | %s | max holders %s | lost %s | recovery %s | %s", r.Fault, r.Invariants, r.MaxHolders, r.Lost, r.Recovery, r.Notes)
	path := os.Getenv("TWINSLOT_FAULTS_SUMMARY")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Errorf("summary file: %v", err)
		return
	}
	defer f.Close()
	clean := func(s string) string { return strings.NewReplacer("\t", " ", "\n", " ").Replace(s) }
	fmt.Fprintf(f, "%s\t%s\t%s\t%s\t%s\t%s\n", clean(r.Fault), clean(r.Invariants), clean(r.MaxHolders), clean(r.Lost), clean(r.Recovery), clean(r.Notes))
}

// ms formats a duration in milliseconds for the table.
func ms(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
