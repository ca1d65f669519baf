// Package osimage builds a bootable UEFI Debian host image with A/B /usr partitions, the
// way twinslot's real-boot tests and lab machines run it (`mkimage os`).
//
// # Bootstrap (cached)
//
// mmdebstrap --variant=minbase installs Debian (Suite) with systemd, dbus, udev, the cloud
// kernel and dracut (Packages) from the mirror configured on the build host, without
// documentation. A customize hook builds the initrd once with dracut: a generic systemd
// initrd, which mounts /usr from mount.usr=PARTUUID=… before switching root (initramfs-tools
// does not understand mount.usr= and would need a script of ours). The tree is cached as a
// tarball with the kernel and the base initrd under CACHE/os/<key>/, the key a hash of the
// suite, the package list, the mmdebstrap options and the hook script; it is built in a
// temporary directory and renamed into place, and a cached bootstrap is never fetched again.
//
// # Per version (no loop devices, no mounts)
//
// The tarball is unpacked and split: its usr/ becomes the /usr tree, the rest ROOT.
//
//	/usr  Debian's /usr
//	      bin/{updated,updatectl,locksmithd,locksmithctl}
//	      lib/systemd/system/{updated,locksmithd}.service, enabled in multi-user.target.wants
//	      share/dbus-1/system.d/com.coreos.update1.conf (root and group twinslot may call)
//	      lib/sysusers.d/twinslot.conf (creates group twinslot at boot)
//	      share/twinslot/trust.json (with a trust root), share/twinslot/filler (with a filler)
//	      lib/os-release (ID=twinslot, VERSION, VERSION_ID, BUILD_ID, BOARD)
//	      boot/vmlinuz, boot/initrd.img
//	      lib/systemd/system/twinslot-broken.service, enabled: a unit that fails where
//	      lib/twinslot/broken exists (Broken images; good ones have lib/twinslot/good)
//
// usr.img is `mkfs.ext4 -d` of that tree, reproducible: all times are Epoch, mkfs adds
// entries in name order, the UUID derives from board, version and build id; so two builds of
// one version are byte-identical. Versions of one tree share most of their blocks: size and
// inode count are rounded (UsrImageSize: the tree plus room, to 64 MiB, at most the slot
// size), the directory hash seed and the metadata checksum seed derive from the board alone,
// and a broken build differs from a good one only by the name of an empty file. A file that
// changes size still moves every file after it (mkfs allocates in name order); the payload's
// content-defined chunks find moved data again.
//
// The initrd of a build is the base initrd, zero-padded to 4 bytes, followed by an
// uncompressed newc archive holding the marker and a unit, enabled in initrd.target, that
// copies it to /run/twinslot/initrd-marker (MarkerPath): the booted system can prove which
// initrd it came up with.
//
// disk.img (DiskLayout) is a sparse GPT disk: 1 EFI-SYSTEM (FAT32 made with mkfs.vfat and
// filled with mtools: /EFI/BOOT/BOOTX64.EFI, the static /EFI/BOOT/grub.cfg of GrubConfig,
// /twinslot/vmlinuz-a and initrd-a), 3 USR-A (usr.img, P=1 S=1), 4 USR-B (empty, P=0) and
// 9 ROOT (ext4 written by mkfs.ext4 at its offset: /etc, /var, /home, /root, the top-level
// symlinks into /usr, empty /usr and /boot mountpoints). ROOT's /etc/fstab mounts / rw and
// the ESP at /boot; machine-id is empty (the first boot makes one); systemd-networkd does DHCP
// on en*/eth*; root logs in by itself on ttyS0 (a lab image). The host never reaches for the
// network by itself: no apt sources or timers, no timesyncd, no firstboot prompts.
//
// Invariants: GRUB's choice comes from the GPT bits alone (grub.cfg is static); a slot's
// kernel and initrd come from that slot (/usr/boot); a failed build leaves no output file.
package osimage
