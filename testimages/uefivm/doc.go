// Package uefivm boots raw disk images in a UEFI virtual machine: QEMU's q35 machine with
// Debian's OVMF firmware, optionally a TPM 2.0 (swtpm) and loopback-only networking. The
// real-boot tests use it: the GRUB gptprio module test (TestE2EGptprioModule) and the full
// guest walks.
//
// # The machine
//
//	qemu-system-x86_64 -machine q35 -accel tcg|kvm -m MemoryMB -smp CPUs
//	  -nodefaults -nographic -no-reboot -serial stdio
//	  -drive if=pflash,unit=0,readonly=on,file=OVMF_CODE_4M.fd   (read-only firmware)
//	  -drive if=pflash,unit=1,file=VARS                           (VarsFile, or a fresh copy)
//	  -device virtio-rng-pci
//	  -drive if=none,id=diskN,file=Disks[N] -device virtio-blk-pci,drive=diskN,bootindex=N[,logical_block_size=…]
//	  [-netdev user,restrict=on,guestfwd=tcp:GUEST-cmd:socat - TCP:HOST … -device virtio-net-pci,romfile=]
//	  [-chardev socket,path=SWTPM -tpmdev emulator -device tpm-tis]
//
// Nothing else: no display, no default devices, no network unless Forwards are given, and
// then only user networking with restrict=on whose guestfwd entries lead to loopback
// addresses (Forward.HostAddr is checked), each guest connection carried by its own socat
// (guestfwd's cmd: form). With fresh variables OVMF boots Disks[0]'s
// /EFI/BOOT/BOOTX64.EFI; every disk has a boot index because OVMF connects (and so GRUB
// sees, as hd0, hd1, … in Disks order) only the devices in QEMU's boot order; with -no-reboot a guest reboot or power-off ends QEMU, so a
// caller inspects the disks between boots and starts the next boot itself.
//
// Machine fields: Disks, BlockSizes (per disk, e.g. 4096 for a 4Kn disk; default 512), MemoryMB (default 1024), CPUs (default 1), VarsFile (the caller's
// variable store, created from OVMF_VARS_4M.fd when missing; "" gives a fresh copy per
// Start), TPMState (a directory for swtpm's state, kept across boots; "" gives no TPM),
// Forwards, Console (gets the serial console: OVMF, GRUB and the guest's ttyS0), KVM (only
// used when /dev/kvm opens), QEMU (default qemu-system-x86_64).
//
// Start checks the tools (Check: a *MissingError naming the Debian package — qemu-system-x86,
// ovmf, swtpm swtpm-tools, socat — which tests turn into t.Skip via errors.Is(err,
// ErrMissing)), starts swtpm (swtpm socket --tpm2 --tpmstate dir=… --ctrl type=unixio,…
// --terminate) and waits for its socket, then QEMU in its own process group. Run.Wait
// returns nil when the guest rebooted or powered off, ErrKilled after Run.Kill (SIGKILL to
// QEMU and its forwarders: a power cut), another error when QEMU failed (with the end of
// its stderr). swtpm is stopped (SIGTERM, then SIGKILL) after QEMU is gone, and the run's
// temporary directory removed. Cancelling Start's context kills the machine.
//
// # Disks
//
// WriteFAT makes a FAT image from host files (mkfs.vfat + mmd/mcopy on a sparse file, no
// mounts, fixed volume ID); WriteESPDisk puts one into the EFI system partition of a GPT
// disk. The image builders reuse WriteFAT for the ESP of a full host disk.
//
// # Invariants
//
//   - Output is bounded: the console streams to Console; a Run keeps only the last MaxTail
//     bytes of the console and of QEMU's stderr.
//   - The guest reaches the host only through Forwards, which lead to loopback addresses.
//   - A disk image is never written by the host while its Run is alive.
package uefivm
