package payloadcmd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/partition"
	"github.com/twinslot/twinslot/testimages"
	"github.com/twinslot/twinslot/tools/payloadcmd"
)

// TestApplyGPTWriteFails: a GPT write of apply that fails part-way fails apply when the change
// is not in effect; when it took effect (the flip: the new slot boots next all the same) apply
// succeeds, warns on stderr and in --json, and repairs the stale copy or says how to.
func TestApplyGPTWriteFails(t *testing.T) {
	for _, tc := range []struct {
		name       string
		gpt        testimages.FailingGPT
		json       bool
		previous   bool // USR-B holds an older committed image (P=1 S=1), so BeginInstall changes its bits
		wantCode   int
		wantStderr []string
		wantBoot   string // the slot the next boot picks
		wantSync   bool   // the GPT copies agree afterwards
	}{
		{name: "flip failed, not in effect", gpt: testimages.FailingGPT{Op: "PrepareInstall"}, wantCode: 1,
			wantStderr: []string{"write backup entry array", "did not take effect"}, wantBoot: "USR-A", wantSync: true},
		{name: "begin install failed, not in effect", gpt: testimages.FailingGPT{Op: "BeginInstall"}, previous: true, wantCode: 1,
			wantStderr: []string{"did not take effect"}, wantBoot: "USR-A", wantSync: true},
		{name: "flip failed, in effect", gpt: testimages.FailingGPT{Op: "PrepareInstall", Applied: true},
			wantStderr: []string{"payload apply: warning: a GPT write failed, but the change is in effect", "took effect nonetheless",
				"boots USR-B (#4) next", "has been repaired since"}, wantBoot: "USR-B", wantSync: true},
		{name: "flip failed, in effect, json", gpt: testimages.FailingGPT{Op: "PrepareInstall", Applied: true}, json: true,
			wantStderr: []string{"payload apply: warning:", "has been repaired since"}, wantBoot: "USR-B", wantSync: true},
		{name: "flip failed, in effect, repair fails", gpt: testimages.FailingGPT{Op: "PrepareInstall", Applied: true, RepairErr: errors.New("input/output error")},
			wantStderr: []string{"payload apply: warning:", "Repairing the GPT failed too", "run 'updatectl slots --repair'"}, wantBoot: "USR-B"},
		{name: "begin install failed, in effect", gpt: testimages.FailingGPT{Op: "BeginInstall", Applied: true}, previous: true,
			wantStderr: []string{"payload apply: warning:", "has been repaired since"}, wantBoot: "USR-B", wantSync: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			if tc.previous {
				d, err := partition.Open(h.disk)
				if err != nil {
					t.Fatal(err)
				}
				for _, label := range []string{"USR-B", "USR-A"} {
					if s, err := d.SlotByLabel(label); err != nil || d.MarkGood(s) != nil {
						t.Fatalf("mark %s good: %v", label, err)
					}
				}
				d.Close()
			}
			env := payloadcmd.Env{Now: func() time.Time { return time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC) }}
			payloadcmd.WrapGPT(&env, func(d *partition.Disk) payloadcmd.GPTWriter { f := tc.gpt; f.Disk = d; return f })
			args := []string{"apply", "--trust", h.trust, "--disk", h.disk}
			if tc.json {
				args = append(args, "--json")
			}
			var out, errb bytes.Buffer
			code := env.Main(t.Context(), append(args, h.payload), strings.NewReader(""), &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.wantCode, &out, &errb)
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, &errb)
				}
			}
			if tc.json {
				var res struct{ GPTWarnings []string }
				if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.GPTWarnings) != 1 || !strings.Contains(res.GPTWarnings[0], "took effect nonetheless") {
					t.Errorf("--json: %v, gptWarnings %q", err, res.GPTWarnings)
				}
			} else if tc.wantCode == 0 && !strings.Contains(out.String(), "installed 1.1.0") {
				t.Errorf("stdout %s", &out)
			}
			d, err := partition.Open(h.disk, partition.ReadOnly())
			if err != nil {
				t.Fatal(err)
			}
			hl, err := d.Health()
			d.Close()
			if err != nil || hl.InSync != tc.wantSync {
				t.Errorf("GPT health %+v, %v; want in sync %v", hl, err, tc.wantSync)
			}
			if slot, _, err := testimages.Boot(h.disk); err != nil && tc.wantBoot == "USR-B" || slot.Label != tc.wantBoot {
				t.Errorf("booted %s (%v), want %s", slot.Label, err, tc.wantBoot)
			}
		})
	}
}
