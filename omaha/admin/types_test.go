package admin_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
)

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{`"1h30m"`, 90 * time.Minute, true},
		{`90`, 90 * time.Second, true},
		{`"0s"`, 0, true},
		{`"soon"`, 0, false},
		{`true`, 0, false},
		{`"1h" `, time.Hour, true},
		{`1e300`, 0, false},
		{`-1e300`, 0, false},
	} {
		var d admin.Duration
		err := json.Unmarshal([]byte(tc.in), &d)
		if (err == nil) != tc.ok || tc.ok && time.Duration(d) != tc.want {
			t.Errorf("%s: %v, %v", tc.in, time.Duration(d), err)
		}
	}
	b, _ := json.Marshal(admin.Duration(90 * time.Minute))
	if string(b) != `"1h30m0s"` {
		t.Errorf("marshal: %s", b)
	}
}

// FuzzGroup decodes group bodies the way the server does and checks what decodes survives a
// round trip.
func FuzzGroup(f *testing.F) {
	for _, name := range []string{"group.json", "group-change.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var g admin.Group
		if json.Unmarshal(b, &g) == nil {
			out, err := json.Marshal(g)
			if err != nil {
				t.Fatalf("marshal %+v: %v", g, err)
			}
			var g2 admin.Group
			if err := json.Unmarshal(out, &g2); err != nil || g2.Policy != g.Policy || g2.Name != g.Name {
				t.Fatalf("round trip %s → %+v, %v", out, g2, err)
			}
		}
		var c admin.GroupChange
		_ = json.Unmarshal(b, &c)
	})
}
