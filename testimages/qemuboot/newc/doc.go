// Package newc writes cpio archives in the "newc" format (SVR4 portable, magic 070701, no
// checksum), the format the Linux kernel unpacks as an initramfs.
//
// # Format
//
// Each entry is a 110-byte ASCII header — the magic "070701" then thirteen 8-digit
// upper-case hex fields: inode, mode, uid, gid, nlink, mtime, file size, dev major, dev
// minor, rdev major, rdev minor, name size (with its NUL) and check (0) — followed by the
// NUL-terminated name, padded with NULs to a multiple of 4 bytes counted from the header
// start, then the data, padded to a multiple of 4. The archive ends with an entry named
// "TRAILER!!!".
//
// # Invariants
//
//   - Names are relative, clean and slash-separated ("dev/console"); absolute, "..", empty
//     and duplicate names are refused, so the archive unpacks the same everywhere.
//   - The kernel creates an entry only when its parent directory exists, so a missing parent
//     is written first (mode 0755) automatically.
//   - Output is reproducible: uid, gid and mtime are 0, inodes are numbered in write order.
//   - Sizes are bounded by the 32-bit header fields (MaxFileSize).
package newc
