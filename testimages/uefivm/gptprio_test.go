package uefivm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition/gptpriotest"
	"github.com/twinslot/twinslot/testimages/tailbuf"
)

const (
	casesFile  = "../../partition/testdata/gptprio-cases.json"
	buildGRUB  = "../../partition/grub/build.sh"
	espSize    = 16 << 20
	bootBudget = 15 * time.Minute // one TCG boot running every case, on a busy machine
)

// What grub.cfg echoes per case: the device or "error", then the partition GUID.
var (
	caseLine = regexp.MustCompile(`CASE ([a-z0-9-]+) (dev=\S+|error)`)
	uuidLine = regexp.MustCompile(`UUID ([a-z0-9-]+) ([0-9a-f-]+)`)
)

// TestE2EGptprioModule runs the shared selection table (partition/testdata/
// gptprio-cases.json) against the GRUB module: one UEFI boot of a GRUB image built by
// partition/grub/build.sh (or TWINSLOT_GRUB_EFI), whose grub.cfg sets root to each case's
// disk in turn, runs gptprio.next and echoes the result; then every disk is checked with
// the partition package (both GPT copies) and sgdisk -v.
func TestE2EGptprioModule(t *testing.T) {
	needE2E(t)
	m := &Machine{MemoryMB: 256}
	if err := m.Check(); err != nil {
		skipMissing(t, err)
		t.Fatal(err)
	}
	efi := grubImage(t)
	cases, err := gptpriotest.Load(casesFile)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("echo \"GPTPRIO-TEST start root=$root\"\nls\n")
	disks := make([]string, len(cases))
	before := make([][]byte, len(cases))
	for i, c := range cases {
		disks[i] = filepath.Join(dir, fmt.Sprintf("case-%02d-%s.img", i, c.Name))
		if err := c.WriteDisk(disks[i]); err != nil {
			t.Fatal(err)
		}
		if before[i], err = os.ReadFile(disks[i]); err != nil {
			t.Fatal(err)
		}
		if c.Damage != gptpriotest.DamageNone {
			hideMBR(t, disks[i])
		}
		// The ESP disk is hd0; case i is hd(i+1). GRUB's console wraps at 80 columns, so
		// the device and the GUID go on lines of their own.
		fmt.Fprintf(&cfg, "unset d\nunset u\nset root=hd%d\n", i+1)
		fmt.Fprintf(&cfg, "if gptprio.next -d d -u u; then echo \"CASE %s dev=$d\"; echo \"UUID %s $u\"; else echo \"CASE %s error\"; fi\n", c.Name, c.Name, c.Name)
	}
	cfg.WriteString("echo \"GPTPRIO-TEST done\"\nhalt\n")
	cfgFile := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	esp := filepath.Join(dir, "esp.img")
	if err := WriteESPDisk(t.Context(), esp, espSize, map[string]string{
		"EFI/BOOT/BOOTX64.EFI": efi, "EFI/BOOT/grub.cfg": cfgFile,
	}); err != nil {
		skipMissing(t, err)
		t.Fatal(err)
	}

	m.Disks = append([]string{esp}, disks...)
	m.BlockSizes = []int{512}
	for _, c := range cases {
		m.BlockSizes = append(m.BlockSizes, c.Sector())
	}
	console := tailbuf.New(4 << 20)
	m.Console = console
	ctx, cancel := context.WithTimeout(t.Context(), bootBudget)
	defer cancel()
	start := time.Now()
	r, err := m.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(); err != nil {
		t.Fatalf("boot: %v (after %s)\nconsole:\n%s", err, time.Since(start).Round(time.Second), console)
	}
	t.Logf("one UEFI boot through %d cases: %s", len(cases), time.Since(start).Round(100*time.Millisecond))
	out := strings.ReplaceAll(console.String(), "\r", "")
	if !strings.Contains(out, "GPTPRIO-TEST done") {
		t.Fatalf("GRUB did not get through grub.cfg; console:\n%s", out)
	}
	got := map[string]string{}
	for _, mm := range caseLine.FindAllStringSubmatch(out, -1) {
		got[mm[1]] = mm[2]
	}
	for _, mm := range uuidLine.FindAllStringSubmatch(out, -1) {
		got[mm[1]] += " uuid=" + mm[2]
	}

	for i, c := range cases {
		want := "error"
		if s, ok := c.WantSlot(); ok {
			want = fmt.Sprintf("dev=hd%d,gpt%d uuid=%s", i+1, s.Number, strings.ToLower(s.GUID))
		}
		if got[c.Name] != want {
			t.Errorf("case %s (%s): GRUB said %q, want %q", c.Name, c.About, got[c.Name], want)
		}
		if c.Damage != gptpriotest.DamageNone {
			restoreMBR(t, disks[i], before[i])
		}
		if err := c.Check(disks[i], before[i]); err != nil {
			t.Error(err)
		}
		if c.Writes() {
			sgdiskVerify(t, disks[i])
		}
	}
	if t.Failed() {
		t.Logf("console:\n%s", out)
	}
}

// grubImage is TWINSLOT_GRUB_EFI when set, else what partition/grub/build.sh prints as its
// last line (cached after the first build).
func grubImage(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TWINSLOT_GRUB_EFI"); p != "" {
		return p
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), "bash", buildGRUB)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("partition/grub/build.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	p := lines[len(lines)-1]
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("partition/grub/build.sh printed %q: %v", p, err)
	}
	t.Logf("GRUB image %s (build.sh took %s)", p, time.Since(start).Round(100*time.Millisecond))
	return p
}

// hideMBR zeroes the protective MBR of a case disk whose GPT is damaged. UEFI firmware
// (EDK2's partition driver in OVMF, as on most real machines) repairs a damaged GPT copy
// from the other when it connects a disk with a protective MBR, before GRUB runs; without
// one it leaves the disk alone, so the module's own fallback and repair are what is tested.
// The module reads LBA 1 and the last LBA and ignores LBA 0.
func hideMBR(t *testing.T, disk string) {
	t.Helper()
	patchFile(t, disk, make([]byte, 512)) // the MBR is the first 512 bytes of LBA 0 at any sector size
}

// restoreMBR puts the MBR of the image as written back, before the disk is checked.
func restoreMBR(t *testing.T, disk string, before []byte) {
	t.Helper()
	patchFile(t, disk, before[:512])
}

func patchFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

// sgdiskVerify cross-checks a disk with sgdisk -v when sgdisk is installed (Debian gdisk).
func sgdiskVerify(t *testing.T, disk string) {
	t.Helper()
	if _, err := exec.LookPath("sgdisk"); err != nil {
		return
	}
	out, err := exec.Command("sgdisk", "-v", disk).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v %s: %v\n%s", filepath.Base(disk), err, out)
	}
}
