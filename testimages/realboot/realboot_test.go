package realboot

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleParsesReportsAndGrub(t *testing.T) {
	var log bytes.Buffer
	c := newConsole(&log)
	// Lines arrive in pieces, with CRs, and the report may follow other output on its line.
	for _, piece := range []string{
		"BdsDxe: loading Boot0001\r\n", "twinslot: booting USR-b (0abc", "def0-1234-4321-aaaa-0123456789ab)\r\n",
		"[   12.3] systemd[1]: Started x.\n", "junk TWINSLOT-E2E version=1.0.1 marker=1.0.1-e2e-101 usr=/dev/vda4 upd",
		"ated=active\n", "TWINSLOT-E2E version=1.0.1 updated=activating\n",
	} {
		if _, err := c.Write([]byte(piece)); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.GrubSlot(); got != "b" {
		t.Errorf("GrubSlot = %q, want b", got)
	}
	r := c.Report()
	if r["version"] != "1.0.1" || r["updated"] != "activating" || r["marker"] != "" {
		t.Errorf("latest report = %v, want the second line only", r)
	}
	if !strings.Contains(log.String(), "BdsDxe") || len(c.Grep("systemd[1]")) != 1 {
		t.Errorf("console log lost lines: %q", log.String())
	}
	// A line without a newline that grows beyond maxLine is dropped, not kept forever.
	c.Write(bytes.Repeat([]byte("x"), maxLine+10))
	c.Write([]byte("\nTWINSLOT-E2E version=2\n"))
	if c.Report()["version"] != "2" {
		t.Errorf("report after an overlong line: %v", c.Report())
	}
}

func TestProxyCountsAndCarries(t *testing.T) {
	body := bytes.Repeat([]byte("twinslot"), 64<<10) // 512 KiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	p, err := newProxy(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetRate(8 << 20)
	resp, err := http.Get("http://" + p.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("through the proxy: %d bytes, err %v", len(got), err)
	}
	if p.Down() < int64(len(body)) {
		t.Errorf("Down = %d, want at least the body's %d", p.Down(), len(body))
	}
	if err := p.waitDown(t.Context(), int64(len(body)), nil); err != nil {
		t.Error(err)
	}
	gone := make(chan struct{})
	close(gone)
	if err := p.waitDown(t.Context(), 1<<40, gone); err == nil {
		t.Error("waitDown did not notice the machine stopped")
	}
}

func TestOptionsCheck(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"updated", "updatectl", "locksmithd", "locksmithctl"} {
		os.WriteFile(filepath.Join(bin, b), nil, 0o755)
	}
	efi := filepath.Join(t.TempDir(), "BOOTX64.EFI")
	os.WriteFile(efi, []byte("MZ"), 0o644)
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	good := Options{Dir: filepath.Join(t.TempDir(), "new"), Bin: bin, Cache: t.TempDir(), GrubEFI: efi, Filler: 32 << 20, Rate: 1, BootTimeout: time.Minute, Timeout: time.Hour}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no dir", func(o *Options) { o.Dir = "" }, "--dir is required"},
		{"dir not empty", func(o *Options) { o.Dir = full }, "not empty"},
		{"no binaries", func(o *Options) { o.Bin = t.TempDir() }, "make guest-bin"},
		{"no grub", func(o *Options) { o.GrubEFI = "" }, "make grub-efi"},
		{"tiny filler", func(o *Options) { o.Filler = 1 }, "16 MiB"},
		{"good", func(*Options) {}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			err := o.check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("check() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestReportVerdict(t *testing.T) {
	w := &walk{start: time.Now(), o: Options{Out: io.Discard}}
	if r := w.report(nil); r.OK {
		t.Error("a walk that checked nothing passed")
	}
	w.check("a", "first", nil)
	if r := w.report(nil); !r.OK {
		t.Errorf("all checks passed but: %s", r.Verdict)
	}
	w.check("b", "second", io.ErrUnexpectedEOF)
	r := w.report(nil)
	var out bytes.Buffer
	r.Print(&out)
	if r.OK || !strings.Contains(out.String(), "FAIL [b] second: unexpected EOF") || !strings.Contains(r.Verdict, "1 of 2") {
		t.Errorf("report with a failed check: ok=%v\n%s", r.OK, out.String())
	}
}

func TestOverlay(t *testing.T) {
	dir := t.TempDir()
	if err := writeOverlay(dir); err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "etc/twinslot/update.conf"))
	if !strings.Contains(string(conf), "SERVER=http://10.0.2.100:80/v1/update/") {
		t.Errorf("update.conf: %s", conf)
	}
	if fi, err := os.Stat(filepath.Join(dir, "etc/twinslot/e2e-report")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("report script not executable: %v", err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc/systemd/system/multi-user.target.wants/twinslot-e2e-report.service")); err != nil || !strings.HasSuffix(l, "twinslot-e2e-report.service") {
		t.Errorf("report unit not enabled: %q %v", l, err)
	}
}

// feed is a console that has printed lines.
func feed(lines ...string) *console {
	c := newConsole(io.Discard)
	for _, l := range lines {
		c.Write([]byte(l + "\n"))
	}
	return c
}

func TestByDelta(t *testing.T) {
	const head = `[ 90.2] updated[384]: time=x level=INFO msg="payload installed" version=1.0.3 reused_target=0 reused_active=9 fetched=7 written=16 duration=1s`
	for _, tc := range []struct {
		name, line, want string
	}{
		{"none", `[ 90.2] updated[384]: time=x level=INFO msg="agent starting"`, "no finished install of 1.0.3"},
		{"by chunks", head, "did not use the delta section from 1.0.2"},
		{"other base", head + " delta=1.0.1", "did not use the delta section from 1.0.2"},
		{"fell back", head + ` delta_fallback="payload: delta copy …"`, "fell back to the chunk path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := byDelta(feed(tc.line), "1.0.3", "1.0.2"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("byDelta() = %v, want %q", err, tc.want)
			}
		})
	}
	if err := byDelta(feed(head+" delta=1.0.2"), "1.0.3", "1.0.2"); err != nil {
		t.Fatal(err)
	}
}

func TestResumed(t *testing.T) {
	start := `[ 26.1] updated[384]: time=x level=INFO msg="agent starting" slot=USR-A recorded_state=DOWNLOADING state=DOWNLOADING`
	fresh := `[ 26.1] updated[384]: time=x level=INFO msg="agent starting" slot=USR-A recorded_state=IDLE state=IDLE`
	done := `[ 80.6] updated[384]: time=x level=INFO msg="payload installed" version=1.0.1 reused_target=568761305 reused_active=0 fetched=101574956 written=1`
	again := `[ 80.6] updated[384]: time=x level=INFO msg="payload installed" version=1.0.1 reused_target=0 reused_active=568761305 fetched=1 written=1`
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"no agent", []string{done}, "start is not"},
		{"not resumed", []string{fresh, done}, "did not come up in DOWNLOADING"},
		{"no install", []string{start}, "no finished install"},
		{"started over", []string{start, again}, "copied 568761305 from the active slot again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := resumed(feed(tc.lines...)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("resumed() = %v, want %q", err, tc.want)
			}
		})
	}
	f, err := resumed(feed(start, done))
	if err != nil || f.reusedTarget != 568761305 || f.fetched != 101574956 {
		t.Fatalf("resumed() = %+v, %v", f, err)
	}
}
