package window

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // every zone in testdata/zones.txt loads on any machine
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, start, length string
		want                string // Window.String(), empty for an error
	}{
		{name: "day alone", start: "sat", length: "1h"},
		{name: "three fields", start: "sat 01:00 x", length: "1h"},
		{name: "bad day", start: "sun-mon 01:00", length: "1h"},
		{name: "hour 24", start: "24:00", length: "1h"},
		{name: "minute 60", start: "01:60", length: "1h"},
		{name: "seconds", start: "01:00:00", length: "1h"},
		{name: "no colon", start: "0100", length: "1h"},
		{name: "signed hour", start: "+1:00", length: "1h"},
		{name: "bad length", start: "01:00", length: "an hour"},
		{name: "zero length", start: "01:00", length: "0s"},
		{name: "negative length", start: "01:00", length: "-1h"},
		{name: "daily length of a day", start: "01:00", length: "24h"},
		{name: "weekly length of a week", start: "mon 01:00", length: "168h"},
		{name: "daily", start: "23:30", length: "1h30m", want: "23:30 +1h30m0s"},
		{name: "short digits", start: "2:5", length: "5m", want: "02:05 +5m0s"},
		{name: "weekly any case", start: "THU 23:00", length: "90m", want: "Thu 23:00 +1h30m0s"},
		{name: "weekly long", start: "sat 00:00", length: "167h", want: "Sat 00:00 +167h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := Parse(tc.start, tc.length)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted as %v", w)
				}
				return
			}
			if err != nil || w.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", w, err, tc.want)
			}
		})
	}
}

func TestParseSchedule(t *testing.T) {
	for _, tc := range []struct {
		name, starts, lengths string
		windows               int // -1: error
	}{
		{name: "count mismatch", starts: "01:00, 02:00, 03:00", lengths: "1h,2h", windows: -1},
		{name: "one bad", starts: "01:00, 25:00", lengths: "1h", windows: -1},
		{name: "start without length", starts: "01:00", lengths: "", windows: -1},
		{name: "none", starts: "", lengths: "", windows: 0},
		{name: "one length for all", starts: "mon 01:00, thu 03:00", lengths: "1h", windows: 2},
		{name: "a length each", starts: "01:00,13:00", lengths: "1h, 30m", windows: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.starts, tc.lengths, time.UTC)
			if tc.windows < 0 {
				if err == nil {
					t.Fatalf("accepted: %v", s)
				}
				return
			}
			if err != nil || len(s.Windows) != tc.windows {
				t.Fatalf("got %v, %v", s, err)
			}
		})
	}
	if _, err := ParseSchedule("01:00", "1h", nil); err == nil {
		t.Error("accepted a nil location")
	}
}

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// Exact answers on the days clocks change, checked by hand against the zone's rules.
func TestDSTCases(t *testing.T) {
	for _, tc := range []struct {
		name, zone, start, length string
		at                        string // an instant (RFC 3339) just before the window
		wantStart, wantEnd        string // RFC 3339 with the zone's offset
	}{
		{name: "spring forward skips the start: open when the jump ends",
			zone: "America/New_York", start: "02:30", length: "1h", at: "2026-03-08T00:00:00-05:00",
			wantStart: "2026-03-08T03:00:00-04:00", wantEnd: "2026-03-08T04:00:00-04:00"},
		{name: "fall back repeats the start: first one, elapsed length",
			zone: "America/New_York", start: "01:30", length: "1h", at: "2026-11-01T00:00:00-04:00",
			wantStart: "2026-11-01T01:30:00-04:00", wantEnd: "2026-11-01T01:30:00-05:00"},
		{name: "window spanning spring forward lasts its elapsed length",
			zone: "Europe/Berlin", start: "01:00", length: "3h", at: "2026-03-29T00:00:00+01:00",
			wantStart: "2026-03-29T01:00:00+01:00", wantEnd: "2026-03-29T05:00:00+02:00"},
		{name: "half-hour DST shift",
			zone: "Australia/Lord_Howe", start: "02:15", length: "30m", at: "2026-10-04T00:00:00+10:30",
			wantStart: "2026-10-04T02:30:00+11:00", wantEnd: "2026-10-04T03:00:00+11:00"},
		{name: "DST at midnight: the day starts at 01:00",
			zone: "America/Santiago", start: "00:15", length: "1h", at: "2026-09-05T22:00:00-04:00",
			wantStart: "2026-09-06T01:00:00-03:00", wantEnd: "2026-09-06T02:00:00-03:00"},
		{name: "no DST",
			zone: "Asia/Kolkata", start: "Sun 03:00", length: "2h", at: "2026-03-04T00:00:00+05:30",
			wantStart: "2026-03-08T03:00:00+05:30", wantEnd: "2026-03-08T05:00:00+05:30"},
		{name: "crosses midnight",
			zone: "UTC", start: "Thu 23:00", length: "1h30m", at: "2026-01-01T12:00:00Z",
			wantStart: "2026-01-01T23:00:00Z", wantEnd: "2026-01-02T00:30:00Z"},
		{name: "crosses the week end",
			zone: "UTC", start: "Sat 23:00", length: "2h", at: "2026-01-03T23:30:00Z",
			wantStart: "2026-01-03T23:00:00Z", wantEnd: "2026-01-04T01:00:00Z"},
		{name: "a skipped date has no window",
			zone: "Pacific/Apia", start: "10:00", length: "1h", at: "2011-12-29T12:00:00-10:00",
			wantStart: "2011-12-31T10:00:00+14:00", wantEnd: "2011-12-31T11:00:00+14:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := mustLoc(t, tc.zone)
			s, err := ParseSchedule(tc.start, tc.length, loc)
			if err != nil {
				t.Fatal(err)
			}
			at, _ := time.Parse(time.RFC3339, tc.at)
			ws, _ := time.Parse(time.RFC3339, tc.wantStart)
			we, _ := time.Parse(time.RFC3339, tc.wantEnd)
			iv, ok := s.Next(at)
			if !ok || !iv.Start.Equal(ws) || !iv.End.Equal(we) {
				t.Fatalf("Next(%s) = %s .. %s (%v), want %s .. %s", tc.at,
					iv.Start.In(loc).Format(time.RFC3339), iv.End.In(loc).Format(time.RFC3339), ok, tc.wantStart, tc.wantEnd)
			}
			if s.Open(ws.Add(-time.Second)) || !s.Open(ws) || !s.Open(we.Add(-time.Second)) || s.Open(we) {
				t.Fatal("Open disagrees with the interval edges")
			}
		})
	}
}

func TestMergedWindows(t *testing.T) {
	s, err := ParseSchedule("01:00, 02:00, 05:00", "1h30m, 1h, 1h", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 1, 10, 0, 0, time.UTC)
	iv, _ := s.Next(at)
	if !iv.Start.Equal(time.Date(2026, 5, 1, 1, 0, 0, 0, time.UTC)) || !iv.End.Equal(time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)) {
		t.Fatalf("merged interval %v .. %v, want 01:00 .. 03:00", iv.Start, iv.End)
	}
	iv, _ = s.Next(iv.End)
	if iv.Start.Hour() != 5 {
		t.Fatalf("next after 03:00 starts %v, want 05:00", iv.Start)
	}
	var always Schedule
	if !always.Open(at) || !always.Always() {
		t.Fatal("empty schedule is not always open")
	}
}

func loadZones(t testing.TB) []string {
	f, err := os.Open("testdata/zones.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var zones []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if z := strings.TrimSpace(sc.Text()); z != "" {
			zones = append(zones, z)
		}
	}
	return zones
}

// Property test over random zones, dates and windows, half of them near a clock change.
func TestScheduleProperties(t *testing.T) {
	zones := loadZones(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0x10c5))
	n := 1500
	if testing.Short() {
		n = 150
	}
	lo := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	hi := time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := range n {
		loc := mustLoc(t, zones[r.IntN(len(zones))])
		w := Window{Weekly: r.IntN(2) == 0, Weekday: time.Weekday(r.IntN(7)), Hour: r.IntN(24), Minute: r.IntN(60)}
		period := day
		if w.Weekly {
			period = week
		}
		// Mostly windows short enough never to overlap their next occurrence (clock changes move
		// occurrences by at most a few hours, or a day where a zone skipped a date); some up to
		// the period.
		exact := period - 4*time.Hour
		if w.Weekly {
			exact = period - 28*time.Hour
		}
		maxLen := exact
		if r.IntN(5) == 0 {
			maxLen = period - time.Minute
		}
		w.Length = time.Minute + time.Duration(r.Int64N(int64(maxLen-time.Minute)))/time.Minute*time.Minute
		s := Schedule{Windows: []Window{w}, Loc: loc}
		at := time.Unix(lo+r.Int64N(hi-lo), 0)
		if i%2 == 0 {
			if _, end := at.In(loc).ZoneBounds(); !end.IsZero() {
				at = end.Add(time.Duration(r.Int64N(int64(4*day))) - 2*day)
			}
		}
		checkSchedule(t, r, s, at, maxLen == exact)
		if t.Failed() {
			t.Fatalf("failed for %s in %s at %s (seed %d)", w, loc, at.In(loc).Format(time.RFC3339), seed)
		}
	}
}

func checkSchedule(t *testing.T, r *rand.Rand, s Schedule, at time.Time, exactLength bool) {
	t.Helper()
	w := s.Windows[0]
	iv, ok := s.Next(at)
	if !ok {
		t.Errorf("no window within 15 days of %s", at)
		return
	}
	open := s.Open(at)
	if open != iv.Contains(at) || (!open && !at.Before(iv.Start)) {
		t.Errorf("Open(at)=%v but Next(at) = %s .. %s", open, iv.Start, iv.End)
	}
	if !s.Open(iv.Start) || !s.Open(iv.End.Add(-time.Second)) || s.Open(iv.End) {
		t.Errorf("Open disagrees with the edges of %s .. %s", iv.Start, iv.End)
	}
	merged := iv.End.Sub(iv.Start) != w.Length
	if iv.End.Sub(iv.Start) < w.Length || exactLength && merged {
		t.Errorf("window lasts %s, want its elapsed length %s", iv.End.Sub(iv.Start), w.Length)
	}
	for range 8 {
		if gap := iv.Start.Sub(at); gap > 0 {
			if u := at.Add(time.Duration(r.Int64N(int64(gap)))); s.Open(u) {
				t.Errorf("open at %s, before the next window %s", u, iv.Start)
			}
		}
		if u := iv.Start.Add(time.Duration(r.Int64N(int64(iv.End.Sub(iv.Start))))); !s.Open(u) {
			t.Errorf("closed at %s inside %s .. %s", u, iv.Start, iv.End)
		}
	}
	// The start is the first instant of its local date reading hh:mm or later.
	ls := iv.Start.In(s.Loc)
	y, m, d := ls.Date()
	if w.Weekly && ls.Weekday() != w.Weekday {
		t.Errorf("weekly window on %s opens on %s", w.Weekday, ls.Weekday())
	}
	if !onOrAfter(iv.Start, y, m, d, w.Hour, w.Minute, s.Loc) {
		t.Errorf("start %s is not at or after %02d:%02d of its date", ls, w.Hour, w.Minute)
	}
	if zs, _ := ls.ZoneBounds(); !(ls.Hour() == w.Hour && ls.Minute() == w.Minute && ls.Second() == 0) && !zs.Equal(iv.Start) {
		t.Errorf("start %s is neither %02d:%02d nor a clock change", ls, w.Hour, w.Minute)
	}
	for k := 1; k <= 26*60; k += 1 + r.IntN(7) {
		if u := iv.Start.Add(-time.Duration(k) * time.Minute); onOrAfter(u, y, m, d, w.Hour, w.Minute, s.Loc) {
			t.Errorf("%s already reads %02d:%02d or later on the same date, before the start %s", u.In(s.Loc), w.Hour, w.Minute, ls)
			break
		}
	}
	if onOrAfter(iv.Start.Add(-time.Second), y, m, d, w.Hour, w.Minute, s.Loc) {
		t.Errorf("a second before the start %s already qualifies", ls)
	}
	// The next occurrence is on the next day (week) with a window, skipping only dates without one.
	if merged {
		return // a long window ran into its next occurrence on a short day
	}
	next, ok := s.Next(iv.End)
	if !ok {
		t.Errorf("no window after %s", iv.End)
		return
	}
	step := 1
	if w.Weekly {
		step = 7
	}
	ny, nm, nd := next.Start.In(s.Loc).Date()
	want := time.Date(y, m, d+step, 12, 0, 0, 0, time.UTC)
	for want.Before(time.Date(ny, nm, nd, 12, 0, 0, 0, time.UTC)) {
		if _, ok := startOn(want.Year(), want.Month(), want.Day(), w.Hour, w.Minute, s.Loc); ok {
			t.Errorf("after %s the next window is on %d-%02d-%02d, skipping %s", ls, ny, nm, nd, want.Format(time.DateOnly))
			return
		}
		want = want.AddDate(0, 0, step)
	}
}
