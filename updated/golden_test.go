package updated

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var golden = flag.Bool("golden", false, "rewrite testdata/state-*.json from the event sequences")

// goldenRecords are records reached by pure event sequences; testdata/state-v1-NAME.json holds
// each as the agent writes it. A change of the file format must bump FormatVersion (and keep
// reading these files) — an agent rolled back to an older version reads what the newer one
// wrote.
func goldenRecords(t *testing.T) map[string]Record {
	needReboot, _ := run(t, NewRecord(), updateEvents()...)
	needReboot.BootID = "boot-1"
	needReboot.AlephVersion = "1.0.0"
	needReboot.Boot = BootStatus{BootSteady, "1.0.0", "", "USR-A"}

	trial := Resume(needReboot, BootFacts{BootID: "boot-2", Slot: "USR-B", Version: "2.0.0", Now: t0})
	failedGate, _ := run(t, trial, Event{Kind: EvUnhealthy, Failure: &Failure{Code: CodeHealthGateFailed,
		Message: "health gate failed: systemd failed; systemd: system is degraded, failed units: app.service"}})
	back := Resume(failedGate, BootFacts{BootID: "boot-3", Slot: "USR-A", Version: "1.0.0", Successful: true, Now: t0})
	rolledBack, _ := run(t, back, Event{Kind: EvCommitted})

	committed, _ := run(t, trial, Event{Kind: EvHealthy}, Event{Kind: EvCommitted})
	return map[string]Record{"fresh": NewRecord(), "need-reboot": needReboot, "rolled-back": rolledBack, "committed": committed}
}

func TestGoldenStateFiles(t *testing.T) {
	for name, rec := range goldenRecords(t) {
		path := filepath.Join("testdata", "state-v1-"+name+".json")
		want, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		if *golden {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenStateFiles -args -golden to create it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the state file format changed; bump FormatVersion and keep reading version 1\n got %s\nwant %s", path, got, want)
		}
		parsed, err := ParseRecord(got)
		if err != nil || !reflect.DeepEqual(parsed, rec) {
			t.Errorf("%s: ParseRecord = %+v, %v", path, parsed, err)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "state-*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"state":"DOWNLOADING","attempt":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("marshal a parsed record: %v", err)
		}
		r2, err := ParseRecord(b)
		if err != nil || !reflect.DeepEqual(r.clone(), r2.clone()) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, r, r2)
		}
		// Whatever the file said, resuming from it must not panic.
		Resume(r, BootFacts{BootID: "b", Slot: "USR-A", Version: "1.0.0", Successful: true, Now: t0})
	})
}
