// Package bootinit is the init program (PID 1) of the initramfs that the QEMU boot test
// (testimages/qemuboot) boots: it plays GRUB's part and the update agent's health gate on a
// real Linux kernel, so the GPT bits are shown to boot for real.
//
// # One boot
//
// Init.Run is PID 1 (testimages/cmd/bootinit calls it with RealSystem); Init.Boot is steps 2–6.
//
//  1. Mount proc, sysfs and devtmpfs; load the kernel modules packed into the initramfs as
//     lib/modules/NN-name.ko, in file-name order (the harness numbers them so that
//     dependencies come first); one already loaded is fine, and one that fails (a soft
//     dependency the CPU cannot use) is logged and named in the error if no disk appears.
//  2. Wait (DiskWait) for a block device under /sys/block whose GPT has /usr slots.
//  3. Choose the slot exactly as GRUB gptprio.next does: partition.Disk.NextBoot, which
//     decrements tries and writes the table (backup first) before the slot is used.
//  4. Mount the chosen partition's ext4 read-only at /usr and read /usr/lib/os-release.
//  5. Run the health gate: updated/health with a systemd Probe answered from the image — the
//     system is "running" unless the image carries lib/twinslot/broken (testimages.BrokenPath),
//     in which case it is "degraded" with a failed unit naming the marker.
//  6. Healthy: MarkGood (successful=1, tries=0; committed). Not healthy: MarkBad (priority 0),
//     which partition refuses when no other slot could boot.
//  7. Print one result line on the console, sync and power off (reboot(2) POWER_OFF).
//
// # Result line
//
// The harness reads the serial console for exactly one line
//
//	TWINSLOT-BOOT {"slot":"USR-B","partition":4,"version":"1.0.1","healthy":true,"committed":true,…}
//
// (ResultPrefix, then the JSON of Result). A boot that failed before a slot was chosen carries
// "error". ParseResult finds the last such line in console output (at most MaxResultLine
// bytes; CR/LF and console noise around it are tolerated).
//
// # Invariants
//
//   - The GPT is changed only through partition (NextBoot, MarkGood, MarkBad), so every write
//     is crash-safe and the bits mean exactly what they mean under GRUB.
//   - The slot is mounted read-only and unmounted before power-off; the table is fsynced.
//   - Every step that touches the kernel goes through System, so the whole boot runs in plain
//     tests on an image file with a fake System; RealSystem is the one PID 1 uses.
package bootinit
