// Package payloadcmd is the 'payload' command line (tools/cmd/payload) as an importable package,
// so tests and the demo run it in-process through Main.
//
// Commands: keygen, trust init, build, sign, verify, inspect, apply. Every rejected payload exits 1
// with the rejection reason in the message; usage mistakes exit 2; nothing is written on a bad
// input. Long work (build, apply) draws a progress bar when stderr is a terminal and prints plain
// progress lines otherwise.
package payloadcmd
