// Package clock is the host daemons' time source: Real, the system clock, and Fake, a manual
// clock for tests that drive schedules (updated's first check, pings and backoff; locksmithd's
// maintenance windows, retries and inhibitor rechecks) without waiting.
//
// Both satisfy the consumers' own two-method interfaces (updated.Clock, locksmith/reboot.Clock):
//
//	Now() time.Time
//	After(d time.Duration) <-chan time.Time
//
// Fake's invariants: time moves only through Advance, Set or AdvanceToNext; an After channel
// is buffered and receives exactly once, the fake time at which it fired, when the clock reaches
// its deadline (at once for d <= 0); waiters due together fire in deadline order. A waiter
// abandoned by its reader stays pending until the clock passes it (WaitFor counts it).
package clock
