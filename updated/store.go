package updated

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

const (
	// StateFile is the name of the state file in the state directory.
	StateFile = "state.json"
	// MaxStateFileSize bounds the state file (the history is bounded by MaxHistory).
	MaxStateFileSize = 4 << 20
)

// ErrCorruptState is returned by Store.Load for a state file that cannot be used: unreadable
// JSON, an unknown state or a newer incompatible format. The agent moves such a file aside and
// starts afresh from the GPT, which is always safe: the boot decision lives in the GPT.
var ErrCorruptState = errors.New("state file unusable")

// Store persists the agent's Record in one file, replaced atomically on every transition.
type Store struct {
	Dir string
}

// Path is the state file's path.
func (s Store) Path() string { return filepath.Join(s.Dir, StateFile) }

// Load reads the record. A missing file is a new host: NewRecord().
func (s Store) Load() (Record, error) {
	return LoadRecord(s.Path())
}

// LoadRecord reads a state file (updatectl reads the history with it).
func LoadRecord(path string) (Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return NewRecord(), nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("updated: open state file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxStateFileSize+1))
	if err != nil {
		return Record{}, fmt.Errorf("updated: read state file %s: %w", path, err)
	}
	return ParseRecord(data)
}

// ParseRecord decodes and validates a state file's content.
func ParseRecord(data []byte) (Record, error) {
	if len(data) > MaxStateFileSize {
		return Record{}, fmt.Errorf("updated: state file larger than %d bytes: %w", MaxStateFileSize, ErrCorruptState)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, fmt.Errorf("updated: decode state file: %v: %w", err, ErrCorruptState)
	}
	switch {
	case r.Version < 1:
		return Record{}, fmt.Errorf("updated: state file has no format version: %w", ErrCorruptState)
	case r.Version > FormatVersion:
		return Record{}, fmt.Errorf("updated: state file format %d is newer than this agent's %d: %w",
			r.Version, FormatVersion, ErrCorruptState)
	case !r.State.Valid():
		return Record{}, fmt.Errorf("updated: state file has unknown state %q: %w", r.State, ErrCorruptState)
	case r.Attempt == nil && (r.State == UpdateAvailable || r.State == Downloading ||
		r.State == Finalizing || r.State == UpdatedNeedReboot || r.State == Resetting):
		return Record{}, fmt.Errorf("updated: state file in %s without an attempt: %w", r.State, ErrCorruptState)
	}
	return r, nil
}

// Save replaces the state file with r (temp file, fsync, rename, fsync directory).
func (s Store) Save(r Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("updated: encode state: %w", err)
	}
	if err := atomicfile.WriteFile(s.Path(), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("updated: save state: %w", err)
	}
	return nil
}

// MoveAside renames an unusable state file so the agent can start afresh without losing it.
func (s Store) MoveAside(now time.Time) (string, error) {
	dst := s.Path() + ".unusable-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(s.Path(), dst); err != nil {
		return "", fmt.Errorf("updated: move unusable state file aside: %w", err)
	}
	return dst, atomicfile.SyncDir(s.Dir)
}
