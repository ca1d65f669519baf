package payload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// fileWriteback returns a function that asks the kernel to start writing [off, off+n) of a file
// slot to its device now, or nil when the slot is not a file. Errors are left to the final
// Sync. It waits for write-out already in flight in the range first (SYNC_FILE_RANGE_WAIT_BEFORE,
// see partition.Disk.StartWriteback: without it a page shared by two neighbouring chunks and
// rewritten during the first write-out is skipped), not for the new write-out.
func fileWriteback(s Slot) func(off, n int64) {
	sc, ok := s.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(off, n int64) {
		rc.Control(func(fd uintptr) {
			unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE)
		})
	}
}
