// Package readme holds the test that keeps README.md honest: TestREADMECommands reads every
// ```sh block of the README and runs each command in it, in order, in-process through the
// command's Main (mkimage, payload, omahad, releasectl, locksmithctl) against real servers on
// loopback (omahad serving its SQLite database, an embedded etcd), in a temporary directory.
// A command that cannot run in a test (it needs root, QEMU, a host's booted disk or the running
// updated on the system bus) is in the test's allowlist with the reason; an allowlist entry
// that no longer matches a README command fails the test too, so the list cannot go stale.
//
// The README's example addresses stand for the real ones: http://127.0.0.1:8080 is the
// in-process omahad (its --listen becomes 127.0.0.1:0), http://etcd:2379 the embedded etcd,
// which commands without -endpoint also reach (LOCKSMITHCTL_ENDPOINT, as on a host). Files the
// README takes the reader to have (Flatcar's flatcar_production_update.gz, an OEM extra) are
// stand-ins the test writes. A line ending in a backslash continues on the next; in a block
// that shows a session, the lines starting with "$ " are the commands and the rest is output.
//
// TestMainsHelp checks that every command line of tools, omaha and testimages has the one
// Main(ctx, args, stdin, stdout, stderr) int signature (as a function, and as Env.Main where
// main passes an environment) and answers --help.
//
// The package has no code besides the tests.
package readme
