package updated

import "time"

// Schedule is when the agent talks to the Omaha server, as update_engine does: a first check
// First±FirstFuzz/2 after start, then every Period±PeriodFuzz/2; after n consecutive failures the
// interval doubles n times (capped at MaxInterval) with a fuzz of ±interval/2; a server
// PollInterval replaces Period (clamped to [MinPoll, MaxInterval]).
type Schedule struct {
	First, FirstFuzz   time.Duration
	Period, PeriodFuzz time.Duration
	MinPoll            time.Duration
	MaxInterval        time.Duration
}

// DefaultSchedule is update_engine's: 7±5 min, then 45±5 min, backoff capped at 4 h.
func DefaultSchedule() Schedule {
	return Schedule{
		First: 7 * time.Minute, FirstFuzz: 10 * time.Minute,
		Period: 45 * time.Minute, PeriodFuzz: 10 * time.Minute,
		MinPoll: time.Minute, MaxInterval: 4 * time.Hour,
	}
}

// Rand returns a uniformly distributed int64 in [0, n); n > 0.
type Rand func(n int64) int64

// fuzz returns d±spread/2, never negative.
func fuzz(d, spread time.Duration, rnd Rand) time.Duration {
	if spread <= 0 {
		return d
	}
	v := d - spread/2 + time.Duration(rnd(int64(spread)+1))
	return max(v, 0)
}

// FirstCheck is the wait before the first check after the agent starts.
func (s Schedule) FirstCheck(rnd Rand) time.Duration {
	return fuzz(s.First, s.FirstFuzz, rnd)
}

// NextCheck is the wait before the next check, after failures consecutive failures (0 after a
// successful check) and with the server's PollInterval (0 if none).
func (s Schedule) NextCheck(failures int, poll time.Duration, rnd Rand) time.Duration {
	if failures > 0 {
		iv := s.backoff(failures)
		return fuzz(iv, iv, rnd)
	}
	base, spread := s.Period, s.PeriodFuzz
	if poll > 0 {
		base = min(max(poll, s.MinPoll), s.MaxInterval)
		if s.Period > 0 {
			spread = time.Duration(float64(s.PeriodFuzz) * float64(base) / float64(s.Period))
		}
	}
	return fuzz(base, spread, rnd)
}

// backoff is Period doubled failures times, capped at MaxInterval.
func (s Schedule) backoff(failures int) time.Duration {
	iv := s.Period
	for i := 0; i < failures && iv < s.MaxInterval; i++ {
		iv *= 2
	}
	return min(iv, s.MaxInterval)
}
