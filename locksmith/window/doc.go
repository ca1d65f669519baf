// Package window parses and evaluates reboot windows: the times of day or week when locksmithd
// may take a reboot slot and reboot.
//
// # Syntax (CoreOS locksmith's, extended)
//
// A window is a start and a length. The start is "HH:MM" (every day) or "Day HH:MM" (every week;
// Day is sun, mon, tue, wed, thu, fri or sat, any case); hours 0-23, minutes 0-59. The length is a
// Go duration ("1h30m"), longer than zero and shorter than the period (24h daily, 168h weekly). A
// window may cross midnight or the end of the week ("Sat 23:00" + "2h" ends Sunday 01:00).
//
// Several windows are comma-separated lists: REBOOT_WINDOW_START="Mon 02:00, Thu 03:00" with
// either one REBOOT_WINDOW_LENGTH for all or one length per start. No windows means always open.
//
// # Time zones and daylight saving time
//
// Windows are read in one IANA time zone (REBOOT_WINDOW_TZ; the host's local zone by default).
// An occurrence of a window on a local date D starts at the first instant of D whose wall clock
// reads HH:MM or later, and lasts Length of real (elapsed) time. So:
//
//   - when clocks go back and HH:MM happens twice, the window starts at the first one;
//   - when clocks jump forward over HH:MM, the window starts the moment the jump ends (02:30 on a
//     day that skips 02:00-03:00 starts at 03:00);
//   - a window lasts exactly Length even across a clock change, so its wall-clock end moves by
//     the change;
//   - a date that does not exist in the zone, or ends before HH:MM (a zone that skipped a day),
//     has no occurrence.
//
// Invariant: Schedule.Next(t) returns the open period containing t (overlapping windows merged)
// or the first one after t, and Schedule.Open(t) is true exactly inside such periods.
package window
