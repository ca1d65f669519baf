package floor

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

func TestFile(t *testing.T) {
	ctx := t.Context()
	f := File{Path: filepath.Join(t.TempDir(), "floor.json")}
	if v, err := f.Get(ctx); err != nil || v != 0 {
		t.Fatalf("new floor = %d, %v", v, err)
	}
	for _, step := range []struct{ to, want uint64 }{{3, 3}, {2, 3}, {3, 3}, {10, 10}} {
		if v, err := f.Advance(ctx, step.to); err != nil || v != step.want {
			t.Fatalf("Advance(%d) = %d, %v; want %d", step.to, v, err, step.want)
		}
	}
	if v, err := (File{Path: f.Path}).Get(ctx); err != nil || v != 10 {
		t.Fatalf("reread = %d, %v", v, err)
	}
	if st, err := os.Stat(f.Path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("floor file: %v %v; want mode 0600", st.Mode(), err)
	}
	for name, content := range map[string]string{"garbage": "{", "no version": `{"floor":3}`, "newer": `{"version":9,"floor":1}`} {
		p := filepath.Join(t.TempDir(), "floor.json")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := (File{Path: p}).Get(ctx); err == nil {
			t.Errorf("%s: Get succeeded", name)
		}
		if _, err := (File{Path: p}).Advance(ctx, 5); err == nil {
			t.Errorf("%s: Advance succeeded over a file it cannot read", name)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("%s: file changed to %q", name, b)
		}
	}
}

// sim opens the in-process TPM simulator, skipping when the binary was built without cgo.
func sim(t *testing.T) *simulator.Simulator {
	t.Helper()
	s, err := simulator.Get()
	if err != nil {
		if strings.Contains(err.Error(), "CGO") {
			t.Skipf("TPM simulator needs cgo (CGO_ENABLED=1, gcc, libssl-dev): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTPMSimulator(t *testing.T) {
	s := sim(t)
	testTPM(t, transport.FromReadWriter(s), func() transport.TPM {
		if err := s.Reset(); err != nil {
			t.Fatal(err)
		}
		return transport.FromReadWriter(s)
	})
}

// testTPM runs the floor and PCR checks against tpm; reboot reboots it (PCRs reset, NV kept).
func testTPM(t *testing.T, tpm transport.TPM, reboot func() transport.TPM) {
	ctx := t.Context()
	fl := &TPM{T: tpm}
	if v, err := fl.Get(ctx); err != nil || v != 0 {
		t.Fatalf("undefined counter = %d, %v; want 0", v, err)
	}
	if v, err := fl.Advance(ctx, 3); err != nil || v != 3 {
		t.Fatalf("Advance(3) = %d, %v", v, err)
	}
	if v, err := fl.Advance(ctx, 2); err != nil || v != 3 {
		t.Fatalf("Advance(2) = %d, %v; a counter never goes down", v, err)
	}
	if _, err := fl.Advance(ctx, 3+MaxAdvance+1); err == nil || !strings.Contains(err.Error(), "small steps") {
		t.Fatalf("a huge jump = %v", err)
	}

	digest := sha256.Sum256([]byte("usr image 2.0.0"))
	if err := Extend(tpm, DefaultPCR, digest); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPCR(tpm, DefaultPCR)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append(make([]byte, 32), digest[:]...))
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR %d = %x, want %x", DefaultPCR, got, want)
	}

	tpm = reboot()
	fl = &TPM{T: tpm}
	if v, err := fl.Get(ctx); err != nil || v != 3 {
		t.Fatalf("counter after reboot = %d, %v; want 3", v, err)
	}
	if got, err := ReadPCR(tpm, DefaultPCR); err != nil || !bytes.Equal(got, make([]byte, 32)) {
		t.Fatalf("PCR after reboot = %x, %v; want zeros", got, err)
	}

	// Beside a file copy: the maximum wins, and Advance brings both up.
	file := File{Path: filepath.Join(t.TempDir(), "floor.json")}
	file.Advance(ctx, 5)
	m := Multi{fl, file}
	if v, err := m.Get(ctx); err != nil || v != 5 {
		t.Fatalf("Multi.Get = %d, %v; want 5", v, err)
	}
	if v, err := m.Advance(ctx, 4); err != nil || v != 5 {
		t.Fatalf("Multi.Advance(4) = %d, %v", v, err)
	}
	if v, _ := fl.Get(ctx); v != 5 {
		t.Fatalf("TPM copy = %d after Multi.Advance, want 5", v)
	}

	// An index that is not a counter belongs to someone else.
	other := tpm2.TPMHandle(0x01507474)
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHOwner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: other, NameAlg: tpm2.TPMAlgSHA256, DataSize: 8,
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTOrdinary, NoDA: true},
	})}).Execute(tpm); err != nil {
		t.Fatal(err)
	}
	if _, err := (&TPM{T: tpm, Index: other}).Advance(ctx, 1); err == nil || !strings.Contains(err.Error(), "not a counter") {
		t.Fatalf("Advance on an ordinary index = %v", err)
	}
}

// TestSwtpm runs the same checks against swtpm, an out-of-process TPM whose state directory
// survives a restart (a reboot).
func TestSwtpm(t *testing.T) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Skip("swtpm not installed (apt-get install swtpm swtpm-tools); skipping")
	}
	if testing.Short() {
		t.Skip("swtpm test skipped in -short mode")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	var cmd *exec.Cmd
	start := func() transport.TPM {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
			os.Remove(sock)
		}
		cmd = exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+dir,
			"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+sock+".ctrl",
			"--flags", "not-need-init,startup-clear")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start swtpm: %v", err)
		}
		for i := 0; ; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if i > 300 {
				t.Fatalf("swtpm did not create its socket: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		tpm, err := linuxudstpm.Open(sock)
		if err != nil {
			t.Fatal(err)
		}
		return tpm
	}
	t.Cleanup(func() {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	testTPM(t, start(), start)
}

func TestMultiErrors(t *testing.T) {
	ctx := t.Context()
	bad := File{Path: filepath.Join(t.TempDir(), "bad.json")}
	os.WriteFile(bad.Path, []byte("{"), 0o644)
	good := File{Path: filepath.Join(t.TempDir(), "good.json")}
	if _, err := (Multi{good, bad}).Get(ctx); err == nil {
		t.Fatal("Multi.Get hid an unreadable store")
	}
	if _, err := (Multi{good, bad}).Advance(ctx, 1); err == nil {
		t.Fatal("Multi.Advance hid an unreadable store")
	}
}
