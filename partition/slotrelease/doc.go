// Package slotrelease reads what a /usr slot holds without mounting it: the ext4 filesystem at
// the start of the slot, its lib/os-release (ID, VERSION, BOARD) and whether it carries the
// lib/twinslot/broken marker. Host tools (updatectl slots/rollback, payload apply) use it to name
// the version and board in each slot; testimages builds images that it reads back. Open reads
// a whole file of a slot (partition/esp copies the slot's boot/vmlinuz and boot/initrd.img to the
// ESP with it) through a small extent reader of its own, because go-diskfs misreads files with
// holes, which mkfs.ext4 -d makes of every all-zero block.
//
// Format: the os-release is read by partition/osrelease, the one parser every component uses
// (its rules: quotes, escapes, VERSION_ID before VERSION, BOARD or FLATCAR_BOARD).
//
// Invariants: slot bytes are untrusted. The superblock geometry is checked against the slot size
// before go-diskfs sizes any table from it, os-release is read only up to osrelease.MaxSize, and a
// panic inside go-diskfs on a corrupt filesystem becomes an error. Every failure to find a
// readable release wraps ErrNoRelease. Open checks every block number against the filesystem,
// bounds the extent tree (depth, entry counts, blocks covered by the file's size) and refuses a
// file above the caller's limit (ErrFileTooLarge).
package slotrelease
