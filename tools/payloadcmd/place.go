package payloadcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

// writeNew creates path with data and permission perm, durably (temporary file beside it,
// fsync, placeNoReplace, fsync of the directory), and only if nothing exists at path at the
// moment of placing: a file another process creates after any earlier check is never replaced.
// It returns the placed file's FileInfo so that a caller undoing the write removes only this
// file. On any error nothing is left behind; the error wraps fs.ErrExist when path exists.
func writeNew(path string, data []byte, perm os.FileMode) (placed os.FileInfo, err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, atomicfile.TempPrefix(path)+"*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return nil, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(perm); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return nil, fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if placed, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("stat %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return nil, fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = placeNoReplace(tmp, path); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		removeIfSame(path, placed)
		return nil, err
	}
	return placed, nil
}

// placeNoReplace renames src to dst unless something (a file, a directory, a symbolic link,
// dangling or not) exists at dst, atomically: the check and the rename are one step, so a dst
// created by another process at any time before is refused, never replaced. It uses
// renameat2(RENAME_NOREPLACE) and falls back to linkNoReplace where the kernel or filesystem
// lacks it. On an error src is left for the caller and dst is untouched; the error wraps
// fs.ErrExist when dst exists.
func placeNoReplace(src, dst string) error {
	err := renameNoReplace(src, dst)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
		return linkNoReplace(src, dst)
	}
	return err
}

// linkNoReplace is placeNoReplace by link(2), which refuses an existing dst, and then removal
// of src. If src cannot be removed, the new dst is removed again and the error returned.
func linkNoReplace(src, dst string) error {
	if err := os.Link(src, dst); err != nil {
		return err
	}
	if err := os.Remove(src); err != nil {
		os.Remove(dst)
		return err
	}
	return nil
}

// removeIfSame removes path if it still is the file placed, not one another process has put
// there since.
func removeIfSame(path string, placed os.FileInfo) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !os.SameFile(st, placed) {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(path))
}
