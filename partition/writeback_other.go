//go:build !linux

package partition

// StartWriteback is a no-op where sync_file_range does not exist; Sync writes everything.
func (d *Disk) StartWriteback(s Slot, off, n int64) {}
