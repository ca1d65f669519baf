// Package cli is the small command-line frame every twinslot tool shares: subcommands (nested
// where a tool needs "trust init" or "group create"), flags that may come before or after the
// positional arguments, --help on every level, and one mapping from errors to exit codes:
//
//	0  success, or help was asked for
//	1  the command failed (the error is printed as "prog: message")
//	2  the command line was wrong (a UsageError; the usage is printed)
//
// Tools expose Main(ctx, args, stdin, stdout, stderr) built on Run so that tests drive them
// in-process; their main packages only build the context and call it.
package cli
