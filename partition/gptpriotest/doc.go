// Package gptpriotest holds the boot-selection cases that both implementations of the
// gptprio rule must pass: the Go one (partition.Next, partition.Disk.NextBoot) and the GRUB
// module (partition/grub/gptprio.c, run under QEMU by testimages/uefivm). One table,
// partition/testdata/gptprio-cases.json, drives both, so the two cannot drift apart.
//
// # The table
//
// Version 1 is a JSON object {"version": 1, "cases": [...]}; each case has
//
//	name    unique, [a-z0-9-]+ (it is echoed on GRUB's console)
//	about   what the case shows
//	slots   the attribute words of USR-A (#3), USR-B (#4) and optionally USR-C (#5), written
//	        as partition.Attributes.String prints them: "P=2 T=1 S=0", and " other=0x…" for
//	        bits outside the gptprio fields (which must survive untouched)
//	sector_size  optional: 4096 for a disk with 4 KiB logical sectors (default 512)
//	damage  "" | "primary-header" (a byte of the primary header changed, so its CRC fails)
//	        | "backup-entries" (a byte of the backup entry array changed) | "both"
//	want    boot: the label of the slot that boots, "" when none may (an error, nothing
//	        written); slots: the attribute words after the boot
//
// # Disks
//
// WriteDisk makes a 4 MiB image with 512-byte (or 4096-byte) sectors and a 128-entry GPT: #1 EFI-SYSTEM,
// #3 USR-A, #4 USR-B, #5 USR-C (only with three slots) of the /usr type, #9 ROOT, fixed GUIDs
// (Flatcar's for USR-A and USR-B), then applies the damage. Check compares a disk after the
// boot with the case: the attribute words, and either both GPT copies valid and in sync
// (when a tries counter changed, the table was written and any damage repaired) or the file
// byte-identical to before (when nothing may be written).
package gptpriotest
