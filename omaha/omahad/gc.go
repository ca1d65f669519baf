package omahad

import "runtime/debug"

// DefaultGCPercent is the garbage collector's target omahad serves with unless GOGC is set. It is
// the one place twinslot tunes the collector: no other program or package sets GOGC,
// GOMEMLIMIT or debug.SetGCPercent (omahaload's benchmark applies this same setting to measure
// the server as it runs).
//
// Every request allocates (XML in and out, rows for the writer) while the live heap is small and
// bounded (the catalog and the instance cache: about 60 MB at 100k hosts), so Go's default of
// 100 spends a tenth of the CPU collecting; 400 gives that back to requests (about 15% more
// checks/s on 2 cores) for a heap that peaks near five times the live one. GOMEMLIMIT, when set,
// still caps the heap.
const DefaultGCPercent = 400

// SetGCPercent applies DefaultGCPercent unless gogc (the GOGC environment variable, which the
// runtime has already applied) chose a setting; restore puts the previous one back.
func SetGCPercent(gogc string) (restore func()) {
	if gogc != "" {
		return func() {}
	}
	old := debug.SetGCPercent(DefaultGCPercent)
	return func() { debug.SetGCPercent(old) }
}
