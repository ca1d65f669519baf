// Package omahaload drives simulated hosts against an Omaha update server on loopback, to
// measure how many check-ins per second it sustains and at what latency.
//
// # What it sends
//
// Run simulates Config.Machines hosts, each with its own machine id, boot id, version (from
// Config.Versions) and track (from Config.Tracks). Request j goes to machine j mod Machines.
// In the first round every machine sends an update check (ping + updatecheck + event 3/2),
// so that every simulated host is registered once; later rounds draw from a realistic mix:
//
//	85.0 %  update check with 3/2 (0.5 % of all requests: 3/0/44 after a rollback)
//	 4.0 %  event 13/1 (download started)
//	 4.0 %  event 14/1 (downloaded)
//	 3.0 %  event 3/1 (installed)
//	 2.5 %  ping only
//	 1.5 %  event 3/0 with an error code (postinstall failed | TestOmahaUrl)
//
// Bodies are written the way Flatcar's update_engine builds them (byte for byte the shape of
// omaha/testdata/request-*.xml), so the server parses what real hosts send.
//
// # Bounds
//
// The target must be a loopback address (127.0.0.0/8, ::1, localhost); Run refuses anything
// else. A run stops after Config.Requests requests or Config.Duration, whichever comes first,
// with at most Config.Concurrency requests in flight; each request has its own timeout.
//
// # What it reports
//
// Result: requests, update checks, events and pings sent; offers and noupdates received;
// errors (no connection, non-200, a body that is not an Omaha response, an error status); the
// elapsed time; checks/s and requests/s; and p50/p99/max latency over all requests and by
// outcome (offer — a check the server answered with an update, which takes a grant decision —,
// noupdate, event, ping, error). With
// Config.Rate set, requests are started on a fixed schedule (open loop) and latency is measured
// from the scheduled start, so a slow server cannot hide its queueing delay.
package omahaload
