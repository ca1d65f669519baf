package payloadcmd

import (
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace is rename(2) that fails with EEXIST when dst exists (renameat2 with
// RENAME_NOREPLACE, Linux 3.15). Filesystems without it return EINVAL, old kernels ENOSYS.
func renameNoReplace(src, dst string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "renameat2", Old: src, New: dst, Err: err}
	}
	return nil
}
