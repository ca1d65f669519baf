package bootinit

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/twinslot/twinslot/testimages"
)

// imageProbe answers the health gate's systemd questions from a mounted test image: a
// testimages image built Broken stands for a system with a failed unit.
type imageProbe struct{ usr string }

func (p imageProbe) broken() (bool, error) {
	_, err := os.Stat(filepath.Join(p.usr, testimages.BrokenPath))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (p imageProbe) SystemState(context.Context) (string, error) {
	switch b, err := p.broken(); {
	case err != nil:
		return "", err
	case b:
		return "degraded", nil
	}
	return "running", nil
}

func (p imageProbe) FailedUnits(context.Context) ([]string, error) {
	if b, err := p.broken(); err != nil || !b {
		return nil, err
	}
	return []string{"twinslot-image.service (/usr/" + testimages.BrokenPath + " present)"}, nil
}
