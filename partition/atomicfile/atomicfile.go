package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile atomically replaces path with data, with permission perm. The temporary files an
// earlier write of path left behind (a crash, a kill) are removed first.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// Write atomically replaces path with what fill writes into f (a new, empty temporary file in
// path's directory, which fill may also seek in, truncate or write at offsets), with permission
// perm. The temporary files an earlier write of path left behind are removed first; on any
// error, including fill's, nothing is left behind and path is untouched.
func Write(path string, perm os.FileMode, fill func(f *os.File) error) (err error) {
	dir, prefix := filepath.Dir(path), TempPrefix(path)
	RemoveTemps(dir, prefix) // best effort: a leftover only takes space
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: rename %s to %s: %w", tmp, path, err)
	}
	return SyncDir(dir)
}

// TempPrefix is how the temporary files of a write of path begin: ".<base>.tmp".
func TempPrefix(path string) string { return "." + filepath.Base(path) + ".tmp" }

// RemoveTemps removes the regular files of dir whose names begin with prefix: the temporary
// files of writes that a crash or kill cut short. Call it only when no such write runs.
func RemoveTemps(dir, prefix string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: list %s for leftover temporary files: %w", dir, err)
	}
	var errs []error
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("atomicfile: remove leftover temporary file: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// SyncDir fsyncs a directory so that a rename in it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync directory %s: %w", dir, err)
	}
	return nil
}
