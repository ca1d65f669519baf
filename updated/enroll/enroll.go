package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/partition/atomicfile"
)

// FileName is the credential file in the agent's state directory.
const FileName = "host-credential.json"

// fileVersion is the version of the file format this package writes and reads.
const fileVersion = 1

// maxFileSize bounds what Load reads.
const maxFileSize = 16 << 10

// ErrNotEnrolled is Load's error when the host holds no credential for the app and machine id.
var ErrNotEnrolled = errors.New("not enrolled")

// Credential is a host's enrollment as stored.
type Credential struct {
	Version    int       `json:"version"`
	AppID      string    `json:"app_id"`
	MachineID  string    `json:"machine_id"`
	GroupID    string    `json:"group_id,omitempty"`
	Credential string    `json:"credential"`
	Enrolled   time.Time `json:"enrolled"`
}

// Path is the credential file of state directory dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Load reads the credential in dir for appID and machineID. A missing file, or one for
// another app or machine id, is ErrNotEnrolled; an unreadable or malformed one is an error
// naming the file.
func Load(dir, appID, machineID string) (Credential, error) {
	path := Path(dir)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Credential{}, fmt.Errorf("enroll: %s: %w", path, ErrNotEnrolled)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("enroll: %w", err)
	}
	defer f.Close()
	var c Credential
	dec := json.NewDecoder(&limitedReader{f, maxFileSize})
	if err := dec.Decode(&c); err != nil {
		return Credential{}, fmt.Errorf("enroll: %s is not a credential file (%v): remove it and enroll again", path, err)
	}
	switch {
	case c.Version != fileVersion:
		return Credential{}, fmt.Errorf("enroll: %s has version %d, this agent reads %d: enroll again", path, c.Version, fileVersion)
	case c.AppID != appID || c.MachineID != machineID:
		return Credential{}, fmt.Errorf("enroll: %s was written for app %s machine %s, not app %s machine %s: %w",
			path, c.AppID, c.MachineID, appID, machineID, ErrNotEnrolled)
	case c.Credential == "":
		return Credential{}, fmt.Errorf("enroll: %s holds no credential: %w", path, ErrNotEnrolled)
	}
	return c, nil
}

type limitedReader struct {
	f *os.File
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// Save writes c to dir atomically, readable by its owner only.
func Save(dir string, c Credential) error {
	c.Version = fileVersion
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if err := atomicfile.WriteFile(Path(dir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("enroll: save credential: %w", err)
	}
	return nil
}

// Enroll exchanges token at the servers of cl for a credential of appID and machineID, saves
// it in dir and returns it. Nothing is written when the server refuses.
func Enroll(ctx context.Context, cl *omaha.Client, dir, appID, machineID, token string, now time.Time) (Credential, error) {
	res, err := cl.Enroll(ctx, omaha.EnrollRequest{AppID: omaha.FormatAppID(appID), MachineID: machineID, Token: token})
	if err != nil {
		return Credential{}, err
	}
	want, _ := omaha.ParseAppID(appID)
	if got, _ := omaha.ParseAppID(res.AppID); res.MachineID != machineID || got != want {
		return Credential{}, fmt.Errorf("enroll: the server enrolled app %s machine %s, not app %s machine %s", res.AppID, res.MachineID, appID, machineID)
	}
	c := Credential{AppID: appID, MachineID: machineID, GroupID: res.GroupID, Credential: res.Credential, Enrolled: now.UTC()}
	if err := Save(dir, c); err != nil {
		return Credential{}, err
	}
	c.Version = fileVersion
	return c, nil
}
