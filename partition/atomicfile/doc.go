// Package atomicfile replaces files so that a crash or power loss at any point leaves either the
// old or the new content, never a mix: write a temporary file in the same directory, fsync it,
// rename it over the target, fsync the directory.
//
// It is the one atomic writer of twinslot: updated (state file, rollback floor, verified payloads),
// locksmithd (status file, /run/reboot-required, the FleetLock reboot record), partition/esp
// (kernels on the ESP), payload (signed payload files), omahad (the package store) and testimages
// (images). It lives under partition, the bottom of the import graph, so every component may use it.
//
// Invariants: the temporary file is named ".<base>.tmp*" in the target's directory (so the
// rename never crosses a filesystem) and is removed when any step fails; the target is never
// opened for writing; WriteFile returns only after the directory entry is durable.
package atomicfile
