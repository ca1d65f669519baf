package window

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	day  = 24 * time.Hour
	week = 7 * day
	// MaxWindows bounds how many windows one schedule may list.
	MaxWindows = 64
)

// Window is one reboot window.
type Window struct {
	// Weekly is true for "Day HH:MM" windows; Weekday is then the day.
	Weekly       bool
	Weekday      time.Weekday
	Hour, Minute int
	// Length is the elapsed time the window stays open.
	Length time.Duration
}

var days = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Parse parses one window: start "[Day ]HH:MM" and a Go duration length.
func Parse(start, length string) (Window, error) {
	var w Window
	fields := strings.Fields(start)
	switch len(fields) {
	case 1:
	case 2:
		d, ok := days[strings.ToLower(fields[0])]
		if !ok {
			return Window{}, fmt.Errorf("window: start %q: day %q is not one of sun, mon, tue, wed, thu, fri, sat", start, fields[0])
		}
		w.Weekly, w.Weekday = true, d
		fields = fields[1:]
	default:
		return Window{}, fmt.Errorf("window: start %q is not \"HH:MM\" or \"Day HH:MM\"", start)
	}
	hh, mm, ok := strings.Cut(fields[0], ":")
	var err1, err2 error
	w.Hour, err1 = atoi2(hh)
	w.Minute, err2 = atoi2(mm)
	if !ok || err1 != nil || err2 != nil || w.Hour > 23 || w.Minute > 59 {
		return Window{}, fmt.Errorf("window: start %q: time %q is not HH:MM with hour 0-23 and minute 0-59", start, fields[0])
	}
	l, err := time.ParseDuration(strings.TrimSpace(length))
	if err != nil {
		return Window{}, fmt.Errorf("window: length %q is not a duration such as 1h30m: %w", length, err)
	}
	period := day
	if w.Weekly {
		period = week
	}
	if l <= 0 || l >= period {
		return Window{}, fmt.Errorf("window: length %s must be longer than 0 and shorter than the window's period (%s)", l, period)
	}
	w.Length = l
	return w, nil
}

func atoi2(s string) (int, error) {
	if len(s) < 1 || len(s) > 2 {
		return 0, errors.New("want one or two digits")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || s[0] == '+' || s[0] == '-' {
		return 0, errors.New("not a number")
	}
	return n, nil
}

// String formats w as it is parsed.
func (w Window) String() string {
	s := fmt.Sprintf("%02d:%02d", w.Hour, w.Minute)
	if w.Weekly {
		s = w.Weekday.String()[:3] + " " + s
	}
	return s + " +" + w.Length.String()
}

// Schedule is a set of windows in one time zone. The zero value (no windows) is always open.
type Schedule struct {
	Windows []Window
	Loc     *time.Location
}

// ParseSchedule parses comma-separated starts and lengths (one length for all, or one each) in
// loc. Empty starts and lengths give an always-open schedule.
func ParseSchedule(starts, lengths string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		return Schedule{}, errors.New("window: no time zone given")
	}
	if strings.TrimSpace(starts) == "" && strings.TrimSpace(lengths) == "" {
		return Schedule{Loc: loc}, nil
	}
	ss, ls := strings.Split(starts, ","), strings.Split(lengths, ",")
	if len(ss) > MaxWindows {
		return Schedule{}, fmt.Errorf("window: %d windows; at most %d", len(ss), MaxWindows)
	}
	if len(ls) != 1 && len(ls) != len(ss) {
		return Schedule{}, fmt.Errorf("window: %d starts but %d lengths; give one length for all or one per start", len(ss), len(ls))
	}
	s := Schedule{Loc: loc}
	for i, st := range ss {
		l := ls[0]
		if len(ls) > 1 {
			l = ls[i]
		}
		w, err := Parse(strings.TrimSpace(st), l)
		if err != nil {
			return Schedule{}, err
		}
		s.Windows = append(s.Windows, w)
	}
	return s, nil
}

// Always reports whether the schedule has no windows (reboots may happen at any time).
func (s Schedule) Always() bool { return len(s.Windows) == 0 }

// String lists the windows and the zone.
func (s Schedule) String() string {
	if s.Always() {
		return "any time"
	}
	parts := make([]string, len(s.Windows))
	for i, w := range s.Windows {
		parts[i] = w.String()
	}
	return strings.Join(parts, ", ") + " (" + s.Loc.String() + ")"
}

// Interval is an open period [Start, End). For an always-open schedule both are zero.
type Interval struct {
	Start, End time.Time
}

// Contains reports whether t is inside iv (always true for the unbounded zero interval).
func (iv Interval) Contains(t time.Time) bool {
	if iv.Start.IsZero() && iv.End.IsZero() {
		return true
	}
	return !t.Before(iv.Start) && t.Before(iv.End)
}

// Open reports whether t is inside a window.
func (s Schedule) Open(t time.Time) bool {
	if s.Always() {
		return true
	}
	iv, ok := s.Next(t)
	return ok && iv.Contains(t)
}

// Next returns the open period containing t, or else the first one starting after t, with
// overlapping or touching windows merged into one period. ok is false if no window opens
// within the next 15 days (possible only in a zone skipping dates). An always-open schedule
// returns the zero interval.
func (s Schedule) Next(t time.Time) (iv Interval, ok bool) {
	if s.Always() {
		return Interval{}, true
	}
	lt := t.In(s.Loc)
	y, m, d := lt.Date()
	var occ []Interval
	// Occurrences starting from 8 local days before t (a weekly window is shorter than 7 days)
	// to 15 days after it.
	for off := -8; off <= 15; off++ {
		date := time.Date(y, m, d+off, 12, 0, 0, 0, time.UTC) // calendar arithmetic only
		for _, w := range s.Windows {
			if w.Weekly && date.Weekday() != w.Weekday {
				continue
			}
			if st, ok := startOn(date.Year(), date.Month(), date.Day(), w.Hour, w.Minute, s.Loc); ok {
				occ = append(occ, Interval{Start: st, End: st.Add(w.Length)})
			}
		}
	}
	sort.Slice(occ, func(i, j int) bool { return occ[i].Start.Before(occ[j].Start) })
	for i := 0; i < len(occ); i++ {
		cur := occ[i]
		for i+1 < len(occ) && !occ[i+1].Start.After(cur.End) {
			i++
			if occ[i].End.After(cur.End) {
				cur.End = occ[i].End
			}
		}
		if t.Before(cur.End) {
			return cur, true
		}
	}
	return Interval{}, false
}

// startOn returns the first instant of local date y-m-d in loc whose wall clock reads hh:mm or
// later, and false if the date has no such instant.
//
// The answer is where the wall clock reaches hh:mm: either continuously (hh:mm read in one of
// the zone's offsets around that date) or by a jump (a zone transition). Both kinds of
// candidate are collected and the earliest that satisfies the definition wins.
func startOn(y int, m time.Month, d, hh, mm int, loc *time.Location) (time.Time, bool) {
	naive := time.Date(y, m, d, hh, mm, 0, 0, time.UTC)
	var cands []time.Time
	t := naive.Add(-40 * time.Hour).In(loc)
	limit := naive.Add(40 * time.Hour)
	for range 64 { // a zone has few transitions in 80 hours
		_, off := t.Zone()
		cands = append(cands, naive.Add(-time.Duration(off)*time.Second))
		_, end := t.ZoneBounds()
		if end.IsZero() || end.After(limit) {
			break
		}
		cands = append(cands, end)
		t = end.In(loc)
	}
	var best time.Time
	found := false
	for _, c := range cands {
		if onOrAfter(c, y, m, d, hh, mm, loc) && (!found || c.Before(best)) {
			best, found = c, true
		}
	}
	return best.In(loc), found
}

// onOrAfter reports whether u falls on local date y-m-d in loc at hh:mm or later.
func onOrAfter(u time.Time, y int, m time.Month, d, hh, mm int, loc *time.Location) bool {
	lu := u.In(loc)
	uy, um, ud := lu.Date()
	if uy != y || um != m || ud != d {
		return false
	}
	return lu.Hour() > hh || lu.Hour() == hh && lu.Minute() >= mm
}
