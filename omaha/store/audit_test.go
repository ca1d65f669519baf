package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

func testAudit(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	bad := []struct {
		name string
		e    store.AuditEntry
	}{
		{"no who", store.AuditEntry{Action: "promote", Target: "apps/x"}},
		{"no action", store.AuditEntry{Who: "ci", Target: "apps/x"}},
		{"detail not JSON", store.AuditEntry{Who: "ci", Action: "promote", Detail: json.RawMessage("{")}},
		{"detail too long", store.AuditEntry{Who: "ci", Action: "promote", Detail: json.RawMessage(`"` + strings.Repeat("a", store.MaxAuditDetail) + `"`)}},
		{"control character", store.AuditEntry{Who: "ci\n", Action: "promote"}},
	}
	for _, tc := range bad {
		if _, err := db.AddAudit(ctx, tc.e); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
		}
	}
	if got, err := db.Audit(ctx, store.AuditFilter{}); err != nil || len(got) != 0 {
		t.Fatalf("audit after refused entries = %v, %v; want none", got, err)
	}
	targets := []string{"apps/a/channels/beta", "apps/a/groups/beta", "apps/ab/channels/beta", "apps/a", "tokens"}
	for i := range 10 {
		in := store.AuditEntry{At: t0.Add(time.Duration(i) * time.Minute), TokenID: "abc", Who: "ci", Remote: "127.0.0.1",
			Action: "promote", Target: targets[i%len(targets)], Detail: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
		got, err := db.AddAudit(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID == 0 {
			t.Fatalf("entry %d has no id", i)
		}
	}
	all, err := db.Audit(ctx, store.AuditFilter{})
	if err != nil || len(all) != 10 {
		t.Fatalf("all = %d entries, %v", len(all), err)
	}
	if string(all[0].Detail) != `{"n":9}` || !all[0].At.Equal(t0.Add(9*time.Minute)) || all[0].Who != "ci" || all[0].Remote != "127.0.0.1" {
		t.Fatalf("newest entry = %+v", all[0])
	}
	// Pages of 3 cover all ten, newest first, without overlap.
	var paged []int64
	for before := int64(0); ; {
		page, err := db.Audit(ctx, store.AuditFilter{Before: before, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			paged = append(paged, e.ID)
		}
		if len(page) < 3 {
			break
		}
		before = page[len(page)-1].ID
	}
	if len(paged) != 10 || paged[0] != all[0].ID || paged[9] != all[9].ID {
		t.Fatalf("paged ids %v, want the ten of %v", paged, all)
	}
	// A target matches itself and what lies below it, not a sibling sharing its prefix.
	sub, err := db.Audit(ctx, store.AuditFilter{Target: "apps/a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sub {
		if e.Target != "apps/a" && !strings.HasPrefix(e.Target, "apps/a/") {
			t.Fatalf("target filter apps/a returned %q", e.Target)
		}
	}
	if len(sub) != 6 {
		t.Fatalf("target apps/a: %d entries, want 6", len(sub))
	}
	// Since is inclusive, Until exclusive.
	win, err := db.Audit(ctx, store.AuditFilter{Since: t0.Add(2 * time.Minute), Until: t0.Add(5 * time.Minute)})
	if err != nil || len(win) != 3 || string(win[0].Detail) != `{"n":4}` || string(win[2].Detail) != `{"n":2}` {
		t.Fatalf("window = %+v, %v", win, err)
	}
}
