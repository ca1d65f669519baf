package payload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// fileWriteback returns a function that asks the kernel to start writing [off, off+n) of a file
// slot to its device now (sync_file_range SYNC_FILE_RANGE_WRITE: it does not wait for the
// device), or nil when the slot is not a file. Errors are left to the final Sync.
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
			unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
		})
	}
}
