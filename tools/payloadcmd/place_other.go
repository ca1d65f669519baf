//go:build !linux

package payloadcmd

import (
	"errors"
	"os"
)

// renameNoReplace is Linux-only (renameat2); elsewhere placeNoReplace falls back to link(2).
func renameNoReplace(src, dst string) error {
	return &os.LinkError{Op: "renameat2", Old: src, New: dst, Err: errors.ErrUnsupported}
}
