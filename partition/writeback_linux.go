package partition

import "golang.org/x/sys/unix"

// StartWriteback starts writing bytes [off, off+n) of slot s to the device (Linux
// sync_file_range with SYNC_FILE_RANGE_WAIT_BEFORE|SYNC_FILE_RANGE_WRITE). It is a hint for
// long writes such as an install: data handed to the device early survives a power cut that
// the page cache would not, so a resumed install finds it. Errors surface at Sync.
//
// WAIT_BEFORE matters: SYNC_FILE_RANGE_WRITE alone skips pages already under write-out, and
// an install's neighbouring writes share pages (chunks are not page-aligned), so the page
// where one chunk ends and the next begins, written again while the first write-out was in
// flight, would stay dirty until the kernel's flusher came by; a power cut in that window lost
// it (seen on a real boot). It waits only for write-out already in flight in the range.
func (d *Disk) StartWriteback(s Slot, off, n int64) {
	if d.readOnly || off < 0 || n <= 0 || off > s.Size {
		return
	}
	n = min(n, s.Size-off)
	d.mu.Lock()
	f := d.f
	d.mu.Unlock()
	if f == nil {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), s.Start+off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE)
	})
}
