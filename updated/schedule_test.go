package updated

import (
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	s := DefaultSchedule()
	lo := func(n int64) int64 { return 0 }
	hi := func(n int64) int64 { return n - 1 }
	mid := func(n int64) int64 { return n / 2 }
	for _, tc := range []struct {
		name     string
		got      time.Duration
		min, max time.Duration
	}{
		{"first low", s.FirstCheck(lo), 2 * time.Minute, 2 * time.Minute},
		{"first high", s.FirstCheck(hi), 12*time.Minute - time.Nanosecond, 12 * time.Minute},
		{"period low", s.NextCheck(0, 0, lo), 40 * time.Minute, 40 * time.Minute},
		{"period mid", s.NextCheck(0, 0, mid), 45 * time.Minute, 45 * time.Minute},
		{"period high", s.NextCheck(0, 0, hi), 50*time.Minute - time.Nanosecond, 50 * time.Minute},
		{"poll interval honoured", s.NextCheck(0, 90*time.Minute, mid), 90 * time.Minute, 90 * time.Minute},
		{"poll interval fuzz scales", s.NextCheck(0, 90*time.Minute, lo), 80 * time.Minute, 80 * time.Minute},
		{"poll interval floor", s.NextCheck(0, time.Second, mid), time.Minute - 7*time.Second, time.Minute + 7*time.Second},
		{"poll interval cap", s.NextCheck(0, 24*time.Hour, mid), 4 * time.Hour, 4 * time.Hour},
		{"one failure doubles", s.NextCheck(1, 0, mid), 90 * time.Minute, 90 * time.Minute},
		{"one failure low", s.NextCheck(1, 0, lo), 45 * time.Minute, 45 * time.Minute},
		{"two failures", s.NextCheck(2, 0, mid), 180 * time.Minute, 180 * time.Minute},
		{"backoff capped", s.NextCheck(30, 0, mid), 4 * time.Hour, 4 * time.Hour},
		{"backoff cap high", s.NextCheck(30, 0, hi), 6*time.Hour - time.Nanosecond, 6 * time.Hour},
	} {
		if tc.got < tc.min || tc.got > tc.max {
			t.Errorf("%s: %v, want in [%v, %v]", tc.name, tc.got, tc.min, tc.max)
		}
	}
}

func TestScheduleNeverNegative(t *testing.T) {
	s := Schedule{First: time.Second, FirstFuzz: time.Hour, Period: time.Second, PeriodFuzz: time.Hour, MaxInterval: time.Hour}
	if d := s.FirstCheck(func(int64) int64 { return 0 }); d != 0 {
		t.Fatalf("FirstCheck = %v, want 0", d)
	}
}
