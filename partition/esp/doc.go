// Package esp keeps one kernel and initrd per /usr slot on the EFI system partition, so that the
// static grub.cfg boots the kernel of the slot the GPT bits choose (README, "Boot: GRUB's
// gptprio.next, a kernel per slot").
//
// Layout, below the directory the ESP is mounted at (/boot on a host):
//
//	twinslot/vmlinuz-a  twinslot/initrd-a   kernel and initrd of USR-A (partition 3)
//	twinslot/vmlinuz-b  twinslot/initrd-b   kernel and initrd of USR-B (partition 4)
//	twinslot/.vmlinuz-b.tmp …               a copy being written (removed by the next Install)
//
// The layout is present iff twinslot/ is a directory; a host without it (a disk that boots its
// kernel some other way) installs exactly as before and Install is never called. Each /usr image
// carries its own kernel and initrd at /usr/boot/vmlinuz and /usr/boot/initrd.img (boot/vmlinuz
// and boot/initrd.img inside the slot's filesystem), because the kernel modules in
// /usr/lib/modules must match the kernel. FromSlot opens both in a freshly written slot.
//
// Crash safety: the files of a slot are replaced only while the GPT cannot choose that slot.
// An install writes the files of the target slot's letter only, after the slot verified and
// before the GPT flip (partition.Disk.PrepareInstall); InstallDisk first makes the target
// unbootable (BeginInstall) if it could boot, e.g. when a crash came after the flip and the
// install runs again. Each file is written to a temporary name, fsynced, renamed over its final
// name and the directory fsynced, kernel first, then initrd; a file that already holds the same
// bytes is left alone. Until the flip the GPT chooses the running slot, whose files are never
// touched, so a power cut at any point boots the running slot with its own kernel; a
// half-updated pair of the target letter is never booted, and the next install (the agent
// re-enters FINALIZING after a crash) removes stale temporary files and completes the pair.
// After the flip both files of the new slot are complete on disk. The argument does not need
// rename to be atomic (on FAT it is not, strictly). Rollback, commit and mark-bad only change
// GPT bits: each slot's files were installed with that slot, so they need no change.
//
// Untrusted input: the slot verified against the payload's signed hash, but its files are still
// bounded: a kernel or initrd larger than MaxFileSize is refused, and so is an empty one. Free
// space is checked (statfs) before anything is written. Every failure is an *Error whose Reason
// says what went wrong and whose message says what to do; errors.Is matches the Err* sentinels.
package esp
