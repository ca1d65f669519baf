package floor

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/twinslot/twinslot/partition/atomicfile"
)

const (
	// NVIndex is the TPM NV index of the counter ("ts" in the owner range).
	NVIndex = tpm2.TPMHandle(0x01507473)
	// DefaultPCR is the PCR the booted image digest is extended into.
	DefaultPCR = 15
	// MaxAdvance bounds the counter increments of one Advance.
	MaxAdvance = 1024
	// FileFormat is the version of the floor file format.
	FileFormat = 1
)

// File is a floor kept in a file.
type File struct {
	Path string
}

type fileData struct {
	Version int    `json:"version"`
	Floor   uint64 `json:"floor"`
}

// Get reads the floor; a missing file is 0.
func (f File) Get(context.Context) (uint64, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("floor: read %s: %w", f.Path, err)
	}
	var d fileData
	if err := json.Unmarshal(b, &d); err != nil || d.Version < 1 {
		return 0, fmt.Errorf("floor: %s is not a floor file (remove it only if you know the host's floor): %v", f.Path, err)
	}
	if d.Version > FileFormat {
		return 0, fmt.Errorf("floor: %s has format %d, newer than %d", f.Path, d.Version, FileFormat)
	}
	return d.Floor, nil
}

// Advance raises the floor to v (never lowers it) and returns the floor afterwards.
func (f File) Advance(ctx context.Context, v uint64) (uint64, error) {
	cur, err := f.Get(ctx)
	if err != nil {
		return 0, err
	}
	if v <= cur {
		return cur, nil
	}
	b, _ := json.Marshal(fileData{Version: FileFormat, Floor: v})
	if err := atomicfile.WriteFile(f.Path, append(b, '\n'), 0o600); err != nil {
		return 0, fmt.Errorf("floor: %w", err)
	}
	return v, nil
}

// TPM is a floor kept in a TPM 2.0 NV counter.
type TPM struct {
	T     transport.TPM
	Index tpm2.TPMHandle // 0: NVIndex
}

func (t *TPM) index() tpm2.TPMHandle {
	if t.Index == 0 {
		return NVIndex
	}
	return t.Index
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// name reads the index's current Name (it changes when the index is first written).
func (t *TPM) name() (tpm2.TPM2BName, bool, error) {
	r, err := tpm2.NVReadPublic{NVIndex: t.index()}.Execute(t.T)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return tpm2.TPM2BName{}, false, nil
	}
	if err != nil {
		return tpm2.TPM2BName{}, false, fmt.Errorf("floor: TPM NV_ReadPublic %#x: %w", uint32(t.index()), err)
	}
	pub, err := r.NVPublic.Contents()
	if err != nil {
		return tpm2.TPM2BName{}, false, fmt.Errorf("floor: TPM NV public area: %w", err)
	}
	if pub.Attributes.NT != tpm2.TPMNTCounter {
		return tpm2.TPM2BName{}, false, fmt.Errorf("floor: TPM NV index %#x exists but is not a counter; another program uses it", uint32(t.index()))
	}
	return r.NVName, true, nil
}

// Get reads the counter; an undefined or never-incremented index is 0.
func (t *TPM) Get(context.Context) (uint64, error) {
	name, ok, err := t.name()
	if err != nil || !ok {
		return 0, err
	}
	r, err := tpm2.NVRead{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.index(), Name: name}, Size: 8}.Execute(t.T)
	if errors.Is(err, tpm2.TPMRCNVUninitialized) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("floor: TPM NV_Read %#x: %w", uint32(t.index()), err)
	}
	if len(r.Data.Buffer) != 8 {
		return 0, fmt.Errorf("floor: TPM counter %#x returned %d bytes, want 8", uint32(t.index()), len(r.Data.Buffer))
	}
	return binary.BigEndian.Uint64(r.Data.Buffer), nil
}

func (t *TPM) define() error {
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHOwner,
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: t.index(),
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true,
				NT: tpm2.TPMNTCounter, NoDA: true,
			},
			DataSize: 8,
		}),
	}.Execute(t.T)
	if err != nil && !errors.Is(err, tpm2.TPMRCNVDefined) {
		return fmt.Errorf("floor: TPM NV_DefineSpace %#x: %w", uint32(t.index()), err)
	}
	return nil
}

// Advance increments the counter until it is at least v and returns its value.
func (t *TPM) Advance(ctx context.Context, v uint64) (uint64, error) {
	cur, err := t.Get(ctx)
	if err != nil {
		return 0, err
	}
	if cur >= v {
		return cur, nil
	}
	if v-cur > MaxAdvance {
		return cur, fmt.Errorf("floor: advancing the TPM counter from %d to %d needs more than %d increments; raise security versions in small steps", cur, v, MaxAdvance)
	}
	for i := 0; cur < v; i++ {
		if err := ctx.Err(); err != nil {
			return cur, err
		}
		if i > MaxAdvance {
			return cur, fmt.Errorf("floor: TPM counter did not reach %d after %d increments (at %d)", v, MaxAdvance, cur)
		}
		name, ok, err := t.name()
		if err != nil {
			return cur, err
		}
		if !ok {
			if err := t.define(); err != nil {
				return cur, err
			}
			if name, _, err = t.name(); err != nil {
				return cur, err
			}
		}
		if _, err := (tpm2.NVIncrement{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.index(), Name: name}}).Execute(t.T); err != nil {
			return cur, fmt.Errorf("floor: TPM NV_Increment %#x: %w", uint32(t.index()), err)
		}
		if cur, err = t.Get(ctx); err != nil {
			return cur, err
		}
	}
	return cur, nil
}

// Store is one place a floor is kept.
type Store interface {
	Get(ctx context.Context) (uint64, error)
	Advance(ctx context.Context, v uint64) (uint64, error)
}

// Multi is a floor kept in several stores: Get is their maximum, Advance advances all of them.
type Multi []Store

// Get returns the highest floor of the stores; any store's error is an error (a floor that
// cannot be read must not read as lower).
func (m Multi) Get(ctx context.Context) (uint64, error) {
	var hi uint64
	for _, s := range m {
		v, err := s.Get(ctx)
		if err != nil {
			return 0, err
		}
		hi = max(hi, v)
	}
	return hi, nil
}

// Advance raises every store to at least v, and to the stores' common maximum, so the copies
// agree; it returns the resulting floor.
func (m Multi) Advance(ctx context.Context, v uint64) (uint64, error) {
	hi, err := m.Get(ctx)
	if err != nil {
		return 0, err
	}
	v = max(v, hi)
	var errs []error
	for _, s := range m {
		got, err := s.Advance(ctx, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hi = max(hi, got)
	}
	return hi, errors.Join(errs...)
}

// Extend extends PCR pcr's SHA-256 bank with digest.
func Extend(t transport.TPM, pcr int, digest [32]byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]},
		}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("floor: TPM PCR_Extend %d: %w", pcr, err)
	}
	return nil
}

// ReadPCR returns PCR pcr's SHA-256 value.
func ReadPCR(t transport.TPM, pcr int) ([]byte, error) {
	r, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(uint(pcr))},
	}}}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("floor: TPM PCR_Read %d: %w", pcr, err)
	}
	if len(r.PCRValues.Digests) != 1 {
		return nil, fmt.Errorf("floor: TPM PCR_Read %d returned %d digests", pcr, len(r.PCRValues.Digests))
	}
	return r.PCRValues.Digests[0].Buffer, nil
}
