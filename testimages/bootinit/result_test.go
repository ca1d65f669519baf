package bootinit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseResult(t *testing.T) {
	good := `{"slot":"USR-B","partition":4,"version":"1.0.1","healthy":true,"committed":true}`
	tests := []struct {
		name    string
		console string
		want    Result
		wantErr string
	}{
		{name: "empty", console: "", wantErr: ErrNoResult.Error()},
		{name: "no result line", console: "SeaBIOS\r\n[ 1.0] reboot: Power down\r\n", wantErr: ErrNoResult.Error()},
		{name: "prefix without space", console: "TWINSLOT-BOOT{}\n", wantErr: ErrNoResult.Error()},
		{name: "not JSON", console: ResultPrefix + "slot=USR-B\n", wantErr: "invalid character"},
		{name: "truncated JSON", console: ResultPrefix + `{"slot":"USR-B"` + "\n", wantErr: "unexpected EOF"},
		{name: "unknown field", console: ResultPrefix + `{"slot":"USR-B","bogus":1}` + "\n", wantErr: "unknown field"},
		{name: "data after the object", console: ResultPrefix + `{"slot":"USR-B"} {}` + "\n", wantErr: "data after"},
		{name: "wrong type", console: ResultPrefix + `{"partition":"four"}` + "\n", wantErr: "cannot unmarshal"},
		{name: "line too long to be a result", console: ResultPrefix + `{"health":"` + strings.Repeat("x", MaxResultLine) + `"}`, wantErr: ErrNoResult.Error()},
		{
			name:    "serial line with CR",
			console: "Booting from ROM...\r\n" + ResultPrefix + good + "\r\n[    2.6] reboot: Power down\r\n",
			want:    Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true},
		},
		{
			name:    "after console noise on the same line",
			console: "\x1bc\x1b[?7l\x1b[2J" + ResultPrefix + good,
			want:    Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true},
		},
		{
			name:    "the last line wins",
			console: ResultPrefix + `{"slot":"USR-A"}` + "\n" + ResultPrefix + good + "\n",
			want:    Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true},
		},
		{
			name:    "after an over-long kernel line",
			console: strings.Repeat("k", 3*MaxResultLine) + "\n" + ResultPrefix + good + "\n",
			want:    Result{Slot: "USR-B", Partition: 4, Version: "1.0.1", Healthy: true, Committed: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResult([]byte(tt.console))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseResultNoResultIsSentinel(t *testing.T) {
	if _, err := ParseResult([]byte("kernel panic\n")); !errors.Is(err, ErrNoResult) {
		t.Fatalf("err = %v, want ErrNoResult", err)
	}
}

// TestParseResultConsoles reads real serial consoles captured from QEMU boots (testdata/README.md).
func TestParseResultConsoles(t *testing.T) {
	tests := []struct {
		file string
		want Result
	}{
		{"console-usr-a.txt", Result{Slot: "USR-A", Partition: 3, PartUUID: "7130c94a-213a-4e5a-8e26-6cce9662f132", Priority: 1, Successful: true,
			Version: "1.0.0", Healthy: true, Committed: true, Health: "health gate passed (1 checks in 13ms)", Uptime: 4.97}},
		{"console-broken.txt", Result{Slot: "USR-A", Partition: 3, PartUUID: "7130c94a-213a-4e5a-8e26-6cce9662f132", Priority: 2,
			Version: "1.0.2", MarkedBad: true, Uptime: 4.24,
			Health: "health gate failed: systemd failed; systemd: system is degraded, failed units: twinslot-image.service (/usr/lib/twinslot/broken present)"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseResult(b)
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}
}

// TestLineRoundTrip: what the init prints is what the harness reads.
func TestLineRoundTrip(t *testing.T) {
	r := Result{Slot: "USR-B", Partition: 4, PartUUID: "e03dd35c-7c2d-4a47-b3fe-27f15780a57c", Priority: 2, Tries: 0,
		Version: "1.0.1", Healthy: true, Committed: true, Health: "passed \"quoted\"\nnewline", Uptime: 2.5, Error: "none"}
	line := r.Line()
	if strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, ResultPrefix) {
		t.Fatalf("line %q is not one prefixed line", line)
	}
	got, err := ParseResult([]byte("noise\n" + line + "\n"))
	if err != nil || got != r {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func FuzzParseResult(f *testing.F) {
	for _, name := range []string{"console-usr-a.txt", "console-broken.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(ResultPrefix + `{"slot":"USR-B"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResult(b)
		if err != nil {
			return
		}
		again, err := ParseResult([]byte(r.Line()))
		if err != nil || again != r {
			t.Fatalf("parsed %+v does not round-trip: %+v, %v", r, again, err)
		}
	})
}

func TestLineNotEncodable(t *testing.T) {
	var zero float64
	r, err := ParseResult([]byte(Result{Slot: "USR-A", Uptime: 1 / zero}.Line()))
	if err != nil || !strings.Contains(r.Error, "not encodable") {
		t.Fatalf("got %+v, %v", r, err)
	}
}
