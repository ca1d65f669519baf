package store_test

import (
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

func testHistory(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	stable, beta := groupByName(t, db, "stable"), groupByName(t, db, "beta")
	ev := func(g store.Group, m int, version string, at time.Duration) store.Event {
		return store.Event{AppID: appID, MachineID: machine(m), GroupID: g.ID, Type: 3, Result: 2, Version: version, At: t0.Add(at)}
	}
	evs := []store.Event{
		ev(stable, 0, "1.0.0", -time.Minute), // before the range
		ev(stable, 0, "1.0.0", 0),
		ev(stable, 0, "1.0.0", 10*time.Minute), // the same host twice in a bucket counts once
		ev(stable, 1, "1.0.0", 30*time.Minute),
		ev(stable, 0, "1.1.0", 70*time.Minute), // updated in the second bucket
		ev(stable, 1, "1.0.0", 80*time.Minute),
		ev(beta, 2, "1.1.0", 90*time.Minute),
		ev(stable, 1, "1.1.0", 3*time.Hour), // after the range
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Events: evs}); err != nil {
		t.Fatal(err)
	}
	f := store.HistoryFilter{AppID: appID, GroupID: stable.ID, Since: t0, Bucket: time.Hour, Buckets: 2}
	got, err := db.VersionHistory(ctx, f)
	want := []store.VersionPoint{
		{stable.ID, t0, "1.0.0", 2},
		{stable.ID, t0.Add(time.Hour), "1.0.0", 1},
		{stable.ID, t0.Add(time.Hour), "1.1.0", 1},
	}
	if err != nil || got.Truncated || !got.CountedFrom.Equal(t0) || !reflect.DeepEqual(got.Points, want) {
		t.Fatalf("VersionHistory(stable) = %+v, %v\nwant %+v", got, err, want)
	}
	f.GroupID = ""
	got, err = db.VersionHistory(ctx, f)
	if err != nil || len(got.Points) != 4 {
		t.Fatalf("VersionHistory(every group) = %+v, %v; want the 3 points of stable and 1 of beta", got, err)
	}
	// Over the event limit, the oldest buckets are left out whole: the range holds 6 events
	// (of every group); the 4th newest is in the first bucket, so the newest 3 count, from the
	// second bucket on.
	f.GroupID, f.Buckets, f.MaxEvents = stable.ID, 3, 3
	got, err = db.VersionHistory(ctx, f)
	want = want[1:]
	if err != nil || !got.CountedFrom.Equal(t0.Add(time.Hour)) || !reflect.DeepEqual(got.Points, want) {
		t.Fatalf("VersionHistory(3 events at most) = %+v, %v\nwant from %v: %+v", got, err, t0.Add(time.Hour), want)
	}
	for _, bad := range []store.HistoryFilter{
		{AppID: appID, Since: t0, Bucket: time.Hour, Buckets: 0},
		{AppID: appID, Since: t0, Bucket: time.Hour, Buckets: store.MaxHistoryBuckets + 1},
		{AppID: appID, Since: t0, Bucket: 0, Buckets: 10},
	} {
		if _, err := db.VersionHistory(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("VersionHistory(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func testSearchInstances(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	stable := groupByName(t, db, "stable")
	var ins []store.Instance
	for i, alias := range []string{"web-1", "Web-2", "db_1", "db%1", ""} {
		ins = append(ins, store.Instance{AppID: appID, MachineID: machine(i), Alias: alias, GroupID: stable.ID, Version: "1.0.0",
			State: store.StateIdle, FirstSeen: t0, LastCheck: t0})
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: ins}); err != nil {
		t.Fatal(err)
	}
	search := func(f store.InstanceFilter) []string {
		t.Helper()
		f.AppID = appID
		got, err := db.Instances(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, in := range got {
			names = append(names, in.Alias)
		}
		return names
	}
	for _, tc := range []struct {
		name string
		f    store.InstanceFilter
		want []string
	}{
		{"no match", store.InstanceFilter{Search: "nope"}, nil},
		{"underscore is literal", store.InstanceFilter{Search: "db_"}, []string{"db_1"}},
		{"percent is literal", store.InstanceFilter{Search: "db%"}, []string{"db%1"}},
		{"alias ignoring case", store.InstanceFilter{Search: "WEB"}, []string{"web-1", "Web-2"}},
		{"machine id", store.InstanceFilter{Search: machine(4)[20:]}, []string{""}},
		{"paged", store.InstanceFilter{Search: "web", After: machine(0), Limit: 1}, []string{"Web-2"}},
	} {
		if got := search(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Instances(%+v) = %q, want %q", tc.name, tc.f, got, tc.want)
		}
	}
	long := make([]byte, store.MaxSearchLen+1)
	if _, err := db.Instances(ctx, store.InstanceFilter{AppID: appID, Search: string(long)}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("an over-long search: %v, want ErrInvalid", err)
	}
}

// BenchmarkVersionHistory measures the dashboard's chart query over a week of check-ins of
// 2,000 hosts every 45 minutes (448,000 events, more than MaxHistoryEvents), on SQLite.
func BenchmarkVersionHistory(b *testing.B) {
	ctx := b.Context()
	db, err := store.Open(ctx, filepath.Join(b.TempDir(), "omaha.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.CreateApp(ctx, store.App{ID: appID, Name: "twinslot", Trust: []byte(trust1)}, t0); err != nil {
		b.Fatal(err)
	}
	gs, err := db.Groups(ctx, appID)
	if err != nil {
		b.Fatal(err)
	}
	const hosts, every, week = 2000, 45 * time.Minute, 7 * 24 * time.Hour
	var evs []store.Event
	for at := time.Duration(0); at < week; at += every {
		for m := range hosts {
			v := "1.0.0"
			if time.Duration(m)*week/hosts < at {
				v = "1.1.0"
			}
			evs = append(evs, store.Event{AppID: appID, MachineID: machine(m), GroupID: gs[m%len(gs)].ID, Type: 3, Result: 2, Version: v, At: t0.Add(at)})
		}
		if len(evs) >= 20000 {
			if _, err := db.WriteCheckins(ctx, store.Batch{Events: evs}); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Events: evs}); err != nil {
		b.Fatal(err)
	}
	f := store.HistoryFilter{AppID: appID, Since: t0, Bucket: week / 48, Buckets: 48}
	b.ResetTimer()
	for b.Loop() {
		if _, err := db.VersionHistory(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
}

// testSearchInstancesNonASCII: a host's alias (machinealias) may be any printable UTF-8, and
// the search finds it by its exact text and ignoring case on every backend alike.
func testSearchInstancesNonASCII(t *testing.T, e env) {
	ctx, db := t.Context(), e.db
	createApp(t, db)
	stable := groupByName(t, db, "stable")
	var ins []store.Instance
	for i, alias := range []string{"Büro-Ä1", "büro-ä2", "web-1"} {
		ins = append(ins, store.Instance{AppID: appID, MachineID: machine(i), Alias: alias, GroupID: stable.ID, Version: "1.0.0",
			State: store.StateIdle, FirstSeen: t0, LastCheck: t0})
	}
	if _, err := db.WriteCheckins(ctx, store.Batch{Instances: ins}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, search string
		want         []string
	}{
		{"exact text", "Büro-Ä1", []string{"Büro-Ä1"}},
		{"upper case", "BÜRO", []string{"Büro-Ä1", "büro-ä2"}},
		{"lower case", "ä", []string{"Büro-Ä1", "büro-ä2"}},
	} {
		got, err := db.Instances(ctx, store.InstanceFilter{AppID: appID, Search: tc.search})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, in := range got {
			names = append(names, in.Alias)
		}
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("%s: search %q = %q, want %q", tc.name, tc.search, names, tc.want)
		}
	}
}
