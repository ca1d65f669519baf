// Package slotrelease reads what a /usr slot holds without mounting it: the ext4 filesystem at
// the start of the slot, its lib/os-release (ID, VERSION, BOARD) and whether it carries the
// lib/twinslot/broken marker. Host tools (updatectl slots/rollback, payload apply) use it to name
// the version and board in each slot; testimages builds images that it reads back.
//
// Format: os-release is KEY=VALUE lines, values optionally in single or double quotes, comments
// and blank lines ignored, the last of a repeated key wins. ID, VERSION and BOARD are required and
// limited to MaxFieldLen bytes of letters, digits and . - _ + ~ (they end up in file names).
//
// Invariants: slot bytes are untrusted. The superblock geometry is checked against the slot size
// before go-diskfs sizes any table from it, os-release is read only up to MaxReleaseFile, and a
// panic inside go-diskfs on a corrupt filesystem becomes an error. Every failure to find a
// readable release wraps ErrNoRelease.
package slotrelease
