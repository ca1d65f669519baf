package payload

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// writebackStarter returns a function that asks the kernel to start writing [off, off+n) of the
// slot to its device now (sync_file_range SYNC_FILE_RANGE_WRITE: it does not wait), or nil when
// the slot is not a file. Started early, the device writes while the install goes on, the final
// Sync has little left to do, and an install does not leave a slot's worth of dirty pages in
// memory. It is a hint: errors are left to the final Sync.
func writebackStarter(s Slot) func(off, n int64) {
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
