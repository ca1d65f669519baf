// Package progress draws a one-line progress bar for long byte-counting work (building and
// applying payloads, uploads, downloads): done/total, percentage, rate and time left.
//
// On a terminal the line is redrawn in place at most every Interval; elsewhere (a pipe, a CI log)
// a plain line is printed at most every LogInterval, so logs stay readable. Rate and ETA come from
// a moving window, not the average since start, so they follow a link that speeds up or stalls.
// The clock is injectable for tests.
package progress
