// Package qemuboot boots twinslot test disks for real: QEMU (software emulation, no KVM
// needed) starts a Linux kernel with an initramfs whose init is bootinit, which chooses the
// /usr slot by the GPT bits exactly as GRUB gptprio.next does, mounts it, runs the health
// gate, marks the slot good or bad and powers off. TestE2EQEMUBoot (make e2e) walks a disk
// through a good and a broken update, reading the GPT on the host between boots.
//
// # Pieces
//
//   - FindKernel: $TWINSLOT_KERNEL, else the newest /boot/vmlinuz-*, else /vmlinuz (Debian's
//     symlink), else /lib/modules/*/vmlinuz; KernelRelease reads the release from the bzImage
//     setup header, which names the module directory /lib/modules/RELEASE.
//   - LoadModuleIndex and Resolve: the drivers the boot needs (BootModules: virtio_pci,
//     virtio_blk, ext4) are left out when modules.builtin lists them, else packed with their
//     modules.dep dependencies, dependencies first, and modules.softdep "pre:" soft
//     dependencies (through modules.alias) when they exist. ReadModule decompresses .ko.xz,
//     .ko.zst and .ko.gz, since the init loads plain objects with finit_module.
//   - WriteInitramfs: a newc cpio (package newc) with /init, /dev/console, the mount points
//     and lib/modules/NN-name.ko in load order. BuildInit compiles bootinit static
//     (CGO_ENABLED=0).
//   - Machine.Boot: qemu-system-x86_64 -nographic -no-reboot -nodefaults -serial stdio
//     -accel tcg -m 256 -nic none -kernel … -initrd … -append "console=ttyS0 panic=-1 quiet"
//     -drive file=DISK,format=raw,if=virtio, bounded by a timeout; it returns the
//     TWINSLOT-BOOT result line (bootinit.ParseResult), the console and the boot's duration.
//
// # Running
//
// make e2e (as root it installs qemu-system-x86 and linux-image-cloud-amd64 when missing).
// TestE2EQEMUBoot skips unless TWINSLOT_E2E is set, qemu-system-x86_64 is on PATH and a kernel
// is found; TWINSLOT_KERNEL picks the kernel, TWINSLOT_E2E_KVM=1 uses KVM (off by default: an
// openable /dev/kvm under nested virtualisation can still fail). A boot takes about 3–10 s
// with TCG on a shared 2-core machine.
//
// # Invariants
//
//   - The host never writes the GPT while QEMU runs; QEMU is the only writer then, through the
//     guest's partition package (backup first), and has exited before the host reads it.
//   - Nothing in the guest has a network device; the disk is the only device besides the
//     serial console.
//   - Inputs from the host (modules.dep and friends, module files, the console) are bounded
//     (MaxIndexFile, MaxModuleSize, MaxConsole).
package qemuboot
