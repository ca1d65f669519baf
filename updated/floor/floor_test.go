package floor

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
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
	// The base stays write-locked across a reboot (TPMA_NV_WRITEDEFINE).
	if _, name, _, err := fl.public(BaseIndex); err != nil {
		t.Fatal(err)
	} else if _, err := (tpm2.NVWrite{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: BaseIndex, Name: name},
		Data: tpm2.TPM2BMaxNVBuffer{Buffer: make([]byte, baseSize)}}).Execute(tpm); !errors.Is(err, tpm2.TPMRCNVLocked) {
		t.Fatalf("writing the base after a reboot = %v, want TPM_RC_NV_LOCKED", err)
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
	other := NVIndex + 0x100
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

// usedTPM returns the simulator after another program's counter reached 40 and was deleted:
// any counter defined afterwards starts at 41 on its first increment (TPM 2.0 Part 1, NV
// counters: a counter is initialised to the highest value any counter of the TPM ever held).
func usedTPM(t *testing.T) (*simulator.Simulator, transport.TPM) {
	t.Helper()
	s := sim(t)
	tpm := transport.FromReadWriter(s)
	h := tpm2.TPMHandle(0x01000040)
	define(t, tpm, h, tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTCounter, NoDA: true}, 8)
	for range 40 {
		_, name, _, err := (&TPM{T: tpm}).public(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (tpm2.NVIncrement{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: h, Name: name}}).Execute(tpm); err != nil {
			t.Fatal(err)
		}
	}
	undefine(t, tpm, h)
	return s, tpm
}

func define(t *testing.T, tpm transport.TPM, h tpm2.TPMHandle, attrs tpm2.TPMANV, size uint16) {
	t.Helper()
	if _, err := (tpm2.NVDefineSpace{AuthHandle: tpm2.TPMRHOwner, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: h, NameAlg: tpm2.TPMAlgSHA256, Attributes: attrs, DataSize: size,
	})}).Execute(tpm); err != nil {
		t.Fatalf("define %#x: %v", uint32(h), err)
	}
}

func undefine(t *testing.T, tpm transport.TPM, h tpm2.TPMHandle) {
	t.Helper()
	_, name, _, err := (&TPM{T: tpm}).public(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.NVUndefineSpace{AuthHandle: tpm2.TPMRHOwner, NVIndex: tpm2.NamedHandle{Handle: h, Name: name}}).Execute(tpm); err != nil {
		t.Fatalf("undefine %#x: %v", uint32(h), err)
	}
}

// writeBase defines the base index as twinslot does, writes d into it and locks it.
func writeBase(t *testing.T, tpm transport.TPM, d []byte) {
	t.Helper()
	define(t, tpm, BaseIndex, baseAttrs(), baseSize)
	for _, cmd := range []func(tpm2.TPM2BName) error{
		func(name tpm2.TPM2BName) error {
			_, err := tpm2.NVWrite{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: BaseIndex, Name: name}, Data: tpm2.TPM2BMaxNVBuffer{Buffer: d}}.Execute(tpm)
			return err
		},
		func(name tpm2.TPM2BName) error {
			_, err := tpm2.NVWriteLock{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: BaseIndex, Name: name}}.Execute(tpm)
			return err
		},
	} {
		_, name, _, err := (&TPM{T: tpm}).public(BaseIndex)
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd(name); err != nil {
			t.Fatalf("base: %v", err)
		}
	}
}

func baseBytes(format uint32, base uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32([]byte(baseMagic), format), base)
}

// TestTPMFloorIgnoresOtherCounters: the floor starts at 0 however high the TPM's other counters
// went; before the base index, Advance(3) on a used TPM left the floor at 41 and every payload
// of security version 3..40 was refused.
func TestTPMFloorIgnoresOtherCounters(t *testing.T) {
	s, tpm := usedTPM(t)
	ctx := t.Context()
	fl := &TPM{T: tpm}
	if v, err := fl.Get(ctx); err != nil || v != 0 {
		t.Fatalf("Get on first use = %d, %v; want 0", v, err)
	}
	if v, err := fl.Advance(ctx, 3); err != nil || v != 3 {
		t.Fatalf("Advance(3) on a used TPM = %d, %v; want 3 (payloads of security version 3..%d would be refused)", v, err, v-1)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	fl = &TPM{T: transport.FromReadWriter(s)}
	if v, err := fl.Get(ctx); err != nil || v != 3 {
		t.Fatalf("Get after reboot = %d, %v; want 3", v, err)
	}
	c, b, err := fl.state()
	if err != nil || c.value != 44 || b.value != 41 || !b.locked {
		t.Fatalf("counter %d, base %d (locked %v), %v; want 44, 41, locked", c.value, b.value, b.locked, err)
	}
}

// TestTPMInterruptedInit stops initialisation after each step, reboots the TPM (a crash), and
// checks the state chain, that the floor reads 0 in between, and that Advance finishes the job
// with the base at the counter's first value.
func TestTPMInterruptedInit(t *testing.T) {
	type view struct{ baseDefined, counterDefined, counterWritten, baseWritten, baseLocked bool }
	chain := []view{
		{},
		{baseDefined: true},
		{baseDefined: true, counterDefined: true},
		{baseDefined: true, counterDefined: true, counterWritten: true},
		{baseDefined: true, counterDefined: true, counterWritten: true, baseWritten: true},
		{baseDefined: true, counterDefined: true, counterWritten: true, baseWritten: true, baseLocked: true},
	}
	for steps := range chain {
		t.Run(fmt.Sprintf("after %d steps", steps), func(t *testing.T) {
			s, tpm := usedTPM(t)
			ctx := t.Context()
			fl := &TPM{T: tpm}
			for i := range steps {
				if done, err := fl.initStep(); err != nil || done {
					t.Fatalf("step %d: done %v, %v", i+1, done, err)
				}
				c, b, err := fl.state()
				if err != nil {
					t.Fatal(err)
				}
				got := view{b.defined, c.defined, c.written, b.written, b.locked}
				if got != chain[i+1] {
					t.Fatalf("after step %d: %+v, want %+v", i+1, got, chain[i+1])
				}
			}
			if err := s.Reset(); err != nil {
				t.Fatal(err)
			}
			fl = &TPM{T: transport.FromReadWriter(s)}
			if v, err := fl.Get(ctx); err != nil || v != 0 {
				t.Fatalf("Get after the crash = %d, %v; want 0", v, err)
			}
			if v, err := fl.Advance(ctx, 0); err != nil || v != 0 {
				t.Fatalf("Advance(0) = %d, %v", v, err)
			}
			if steps > 0 { // Advance finishes a started initialisation even when not raising
				if _, b, err := fl.state(); err != nil || !b.written || !b.locked {
					t.Fatalf("base after Advance(0): %+v, %v; want written and locked", b, err)
				}
			}
			if v, err := fl.Advance(ctx, 3); err != nil || v != 3 {
				t.Fatalf("Advance(3) = %d, %v", v, err)
			}
			if c, b, err := fl.state(); err != nil || b.value != 41 || c.value != 44 || !b.locked {
				t.Fatalf("counter %d, base %d (locked %v), %v; want 44, 41, locked", c.value, b.value, b.locked, err)
			}
		})
	}
}

// TestTPMBaseErrors: a base that is missing, malformed or inconsistent with the counter makes
// Get and Advance fail with a *BaseError, and nothing in the TPM changes.
func TestTPMBaseErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, tpm transport.TPM)
		want   string
	}{
		{"base missing", func(t *testing.T, tpm transport.TPM) { undefine(t, tpm, BaseIndex) }, "is missing"},
		{"base of another program", func(t *testing.T, tpm transport.TPM) {
			undefine(t, tpm, BaseIndex)
			define(t, tpm, BaseIndex, tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTOrdinary, NoDA: true}, baseSize)
		}, "not a twinslot base index"},
		{"base garbage", func(t *testing.T, tpm transport.TPM) {
			undefine(t, tpm, BaseIndex)
			writeBase(t, tpm, bytes.Repeat([]byte{0xff}, baseSize))
		}, "does not hold a twinslot base"},
		{"base newer format", func(t *testing.T, tpm transport.TPM) {
			undefine(t, tpm, BaseIndex)
			writeBase(t, tpm, baseBytes(BaseFormat+1, 41))
		}, "has format 2"},
		{"base above counter", func(t *testing.T, tpm transport.TPM) {
			undefine(t, tpm, BaseIndex)
			writeBase(t, tpm, baseBytes(BaseFormat, 45))
		}, "above the counter's 44"},
		{"counter missing", func(t *testing.T, tpm transport.TPM) { undefine(t, tpm, NVIndex) }, "counter is missing"},
		{"counter defined again", func(t *testing.T, tpm transport.TPM) {
			undefine(t, tpm, NVIndex)
			define(t, tpm, NVIndex, counterAttrs(), 8)
		}, "never incremented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tpm := usedTPM(t)
			ctx := t.Context()
			fl := &TPM{T: tpm}
			if v, err := fl.Advance(ctx, 3); err != nil || v != 3 {
				t.Fatalf("Advance(3) = %d, %v", v, err)
			}
			tc.damage(t, tpm)
			before := nvDump(t, tpm)
			var be *BaseError
			if _, err := fl.Get(ctx); !errors.As(err, &be) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Get = %v; want a *BaseError saying %q", err, tc.want)
			}
			if be.Counter != NVIndex || be.Base != BaseIndex || !strings.Contains(be.Error(), "tpm2_nvundefine") {
				t.Errorf("error %q names %#x/%#x and no remedy", be, uint32(be.Counter), uint32(be.Base))
			}
			if v, err := fl.Advance(ctx, 5); !errors.As(err, &be) || v != 0 {
				t.Fatalf("Advance(5) = %d, %v; want 0 and a *BaseError", v, err)
			}
			if after := nvDump(t, tpm); after != before {
				t.Fatalf("Advance changed the TPM:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// nvDump describes both indices, raw.
func nvDump(t *testing.T, tpm transport.TPM) string {
	t.Helper()
	var out strings.Builder
	fl := &TPM{T: tpm}
	for _, h := range []tpm2.TPMHandle{NVIndex, BaseIndex} {
		pub, name, ok, err := fl.public(h)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			fmt.Fprintf(&out, "%#x: undefined\n", uint32(h))
			continue
		}
		fmt.Fprintf(&out, "%#x: %x", uint32(h), tpm2.Marshal(pub.Attributes))
		if pub.Attributes.Written {
			d, err := fl.read(h, name, pub.DataSize)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, " %x", d)
		}
		out.WriteString("\n")
	}
	return out.String()
}

// TestTPMLegacyCounter: a counter defined by a twinslot before the base index (recognised by
// TPMA_NV_AUTHWRITE) keeps its raw value as the floor, inflated or not, and gets no base.
func TestTPMLegacyCounter(t *testing.T) {
	legacy := tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true, NT: tpm2.TPMNTCounter, NoDA: true}
	for _, tc := range []struct {
		name        string
		leftover    bool // a base index defined by an interrupted first use (then a downgrade)
		increments  int
		get, advVal uint64
		replaced    bool // Advance replaces a counter that holds no floor
	}{
		{"never incremented", false, 0, 0, 3, true},
		{"inflated by other counters", false, 1, 41, 41, false},
		{"raised", false, 3, 43, 45, false},
		{"beside a leftover base", true, 2, 42, 45, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tpm := usedTPM(t)
			ctx := t.Context()
			fl := &TPM{T: tpm}
			if tc.leftover {
				if _, err := fl.initStep(); err != nil {
					t.Fatal(err)
				}
			}
			define(t, tpm, NVIndex, legacy, 8)
			for range tc.increments {
				c, err := fl.counter()
				if err != nil {
					t.Fatal(err)
				}
				if err := fl.increment(c.name); err != nil {
					t.Fatal(err)
				}
			}
			if v, err := fl.Get(ctx); err != nil || v != tc.get {
				t.Fatalf("Get = %d, %v; want %d", v, err, tc.get)
			}
			want := max(tc.get, tc.advVal)
			if v, err := fl.Advance(ctx, tc.advVal); err != nil || v != want {
				t.Fatalf("Advance(%d) = %d, %v; want %d", tc.advVal, v, err, want)
			}
			c, b, err := fl.state()
			if err != nil || c.legacy == tc.replaced || b.locked != tc.replaced {
				t.Fatalf("after Advance: legacy counter %v, base locked %v, %v; want %v, %v", c.legacy, b.locked, err, !tc.replaced, tc.replaced)
			}
			if _, _, defined, err := fl.public(BaseIndex); err != nil || defined != (tc.leftover || tc.replaced) {
				t.Fatalf("base index defined = %v, %v; want %v", defined, err, tc.leftover || tc.replaced)
			}
		})
	}
}
