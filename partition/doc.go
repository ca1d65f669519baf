// Package partition is the A/B /usr slot model of twinslot over a GPT disk (an image file or
// a block device), compatible with Flatcar's GRUB gptprio and ChromeOS cgpt.
//
// # Slots and attribute bits
//
// A slot is a partition of type TypeUSR (5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6); Flatcar names
// them USR-A (partition 3) and USR-B (partition 4). The 64-bit attribute word of each entry
// carries priority in bits 48–51, tries left in bits 52–55 and successful in bit 56; every
// other bit is preserved exactly. Fresh image: USR-A P=1 S=1 (0x0101000000000000), USR-B P=0.
//
//   - Boot (GRUB gptprio.next, Next/NextBoot): the highest priority > 0 with tries > 0 or
//     successful; ties go to the lower partition number; tries is decremented (even when
//     successful) and the table written before booting. No candidate: boot fails.
//   - Install (PlanInstall/PrepareInstall): successful=0, tries=1, then cgpt prioritize
//     (the slot alone at the top, other non-zero groups renumbered densely below it: with
//     two slots new=2, old=1).
//   - Commit (PlanMarkGood/MarkGood): successful=1, tries=0, prioritize again.
//   - MarkBad: priority 0. BeginInstall: priority, tries and successful cleared before a slot
//     is overwritten, so a half-written slot is never booted or rolled back to.
//   - Rollback: the partner of the active slot boots next, but only when it booted
//     successfully before and was not marked bad; otherwise a RollbackError says why.
//
// The Plan* functions, Next, Prioritize and Other are the same logic without I/O. Disk
// methods refuse any change after which no slot could boot (ErrNoBootableSlot).
//
// On a real host GRUB applies the boot rule: our module partition/grub/gptprio.c
// (GPL-3.0-or-later, built by partition/grub/build.sh). One table of named cases,
// testdata/gptprio-cases.json (read by package gptpriotest), is run against Next and
// NextBoot here and against the module under QEMU + OVMF (testimages/uefivm).
//
// # Reading and writing the table
//
// Both GPT copies are read and checked on every call. A copy is damaged when it cannot be
// read, its signature, header CRC or entry array CRC fails, or its header breaks the GPT rules
// (it is not where it says it is, its partner or entry array is off the disk, its usable area
// overlaps a header or its own array). A sound, intact copy in a layout go-diskfs would not
// write back unchanged (revision other than 1.0, header size other than 92, entry size other
// than 128, more than MaxEntries entries, entries not filling whole sectors, the backup header
// not at the last LBA because the disk grew after the image was written to it (fixed by
// 'sgdisk -e'), the primary array not at LBA 2 or the backup array not right before the backup
// header) is foreign: the table is read from it like from a valid copy, but never written.
// Every write, Repair included, then fails with ErrUnsupportedTable, saying which layout and
// what to do, and leaves the disk byte for byte as it was: our layout would put an entry array
// on sectors that table does not use, which may hold anything. The primary is used when it can
// be read (valid or foreign), else the backup, as GRUB and the kernel do. go-diskfs
// (partition/gpt) decodes the copy in use and serialises updates. Its writes are captured,
// checked to differ from what is on disk only in the attribute words of the slots and in the
// CRCs (names, GUIDs, unknown bits, unused entries and LBA 0 are never touched), and then
// replayed with an fsync after each:
//
//	backup entry array, backup header, primary entry array, primary header
//
// When the primary is the damaged copy the order is reversed (primary first), so that at
// every instant at least one copy is valid: a crash or torn write at any step leaves either
// the old or the new table readable, never neither. A damaged copy is repaired by Repair or
// by the next write; NextBoot, like GRUB, writes only when a tries counter changes.
//
// A write or sync that fails with an error (an I/O error rather than a crash) returns a
// *WriteError: the table is read back at once, and Applied, or errors.Is(err,
// ErrWriteApplied), says whether the disk already reads the new table (a failure late in the
// sequence leaves it in effect), with the slot that boots next. An applied change is in
// effect, and GRUB acts on it: the caller must treat it as done, not as refused, and have the
// stale copy repaired (Repair, or any later write). Without Applied the old table is in
// effect; when the table cannot be read back (ReadErr) either may be.
//
// Open takes no O_EXCL (the booted disk has mounted partitions) and never asks the kernel to
// re-read the table (only attributes change). A read-write Disk holds an exclusive flock on
// the file; a second writer gets ErrBusy. Readers (ReadOnly) take no lock.
//
// # The booted slot
//
// FindBooted reads proc/cmdline (verity.usr=, mount.usr=, usr= with PARTUUID=, PARTLABEL= or
// a device) or the mount at /usr in proc/self/mountinfo, from an fs.FS rooted at the host's
// "/" so tests pass their own; Locate maps it to the disk device and partition number via
// dev/disk/by-partuuid and sys/class/block; Disk.Active and ActiveSlot pick the slot.
//
// FindDisk and ActiveOf are the one rule updated, updatectl and payload apply share for "which
// disk, which slot runs": without --disk the disk of the running /usr; with --disk the boot
// recorded beside an image (CmdlinePath), else the host's /usr when it is on that very disk;
// a slot a boot names wins, else a disk that is not running has as active its committed slot
// (Committed: successful, highest priority, ties to the lower number). Tools that act on the
// running slot require that a boot named it.
package partition
