// Package testimages builds the disk and /usr images that twinslot's tests, demos and
// benchmarks boot and update, and emulates a boot.
//
// # Disk images (BuildDisk)
//
// A sparse GPT image with Flatcar's partition numbers, labels and type GUIDs scaled to the
// disk size (see Layout): 1 EFI-SYSTEM, 2 BIOS-BOOT, 3 USR-A, 4 USR-B, 5 ROOT-C, 6 OEM,
// 7 OEM-CONFIG, 9 ROOT. Each /usr slot is a third of the disk (SlotSize): 170 MiB on the
// default 512 MiB disk, 2 GiB on a 6 GiB one. USR-A holds a /usr image and has P=1 S=1;
// USR-B is empty with P=0. Disk and partition GUIDs are fixed (Flatcar's USR-A/USR-B GUIDs).
//
// # /usr images (BuildUsr)
//
// An ext4 filesystem written by go-diskfs (4 KiB blocks, no journal) holding
//
//	lib/os-release        ID=twinslot, VERSION=…, BOARD=… (mounted: /usr/lib/os-release)
//	lib/twinslot/broken   only in images built Broken: the host's health check fails
//
// and a body of files in a /usr-like tree (bin, lib, libexec, share, include, lib/modules,
// lib/firmware) from a few bytes to a few MiB: text (~3× with zstd), machine-code-like
// binaries (~1.7×) and a little incompressible data, filling about 75% of the filesystem, so
// a whole image compresses about 2.5–3× with zstd. Content and file names are generated from
// Version and Board. Images are reproducible: go-diskfs stamps times and draws a hash seed
// at random, so after writing every inode and superblock time is set to Epoch, the hash seed
// and filesystem UUID are derived from Version and Board, and inode checksums recomputed.
//
// A build with Base starts from the files of that older image: about Change of them are
// edited in place (60%), resized (20%), removed (10%) or replaced (10%), and Change×N/10 new
// files are added; the filesystem is then written afresh in path order, so a changed size
// shifts the blocks of every later file, as a real build does. At Change 0.05 about 96% of
// the 4 KiB blocks of the new image exist somewhere in the old one, but only about 20–30% of
// its aligned 64 KiB–1 MiB chunks.
//
// # Emulation
//
// InstallRaw writes an image into the inactive slot (the partner of the proven one) and calls
// PrepareInstall. Boot does what GRUB does (partition.Disk.NextBoot), writes the kernel
// command line GRUB would pass ("mount.usr=PARTUUID=…") to DISK.cmdline (CmdlinePath), which
// stands in for /proc/cmdline when tools ask which slot of an image is booted, and reads the
// release of the chosen slot. FailGPTWrite emulates a GPT change whose write fails with an
// I/O error, leaving the new table in effect or not, with the error package partition returns.
package testimages
