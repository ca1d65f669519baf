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
	// BaseIndex is the TPM NV index of the counter's base, the value the counter had when
	// twinslot initialised it; a TPM floor at Index keeps its base at Index+1.
	BaseIndex = NVIndex + 1
	// BaseFormat is the version of the base index's contents: "tsfb", the format as a big-endian
	// uint32, the base as a big-endian uint64.
	BaseFormat = 1
	// DefaultPCR is the PCR the booted image digest is extended into.
	DefaultPCR = 15
	// MaxAdvance bounds the counter increments of one Advance.
	MaxAdvance = 1024
	// FileFormat is the version of the floor file format.
	FileFormat = 1

	baseMagic = "tsfb"
	baseSize  = 16
	initSteps = 6 // the steps of TPM.initStep
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

// TPM is a floor kept in a TPM 2.0 NV counter at Index, relative to a base kept in a write-locked
// NV index at Index+1: floor = counter − base. See the package documentation for the layout,
// the initialisation steps and what happens to counters of earlier twinslot versions.
type TPM struct {
	T     transport.TPM
	Index tpm2.TPMHandle // 0: NVIndex (and BaseIndex for the base)
}

func (t *TPM) index() tpm2.TPMHandle {
	if t.Index == 0 {
		return NVIndex
	}
	return t.Index
}

func (t *TPM) baseIndex() tpm2.TPMHandle { return t.index() + 1 }

// BaseError reports a TPM floor whose base index is missing, malformed or inconsistent with its
// counter. The floor is then unreadable — Get and Advance fail, so nothing is installed — rather
// than computed lower than it is.
type BaseError struct {
	Counter, Base tpm2.TPMHandle
	Problem       string // e.g. "is missing"
}

func (e *BaseError) Error() string {
	return fmt.Sprintf("floor: TPM NV index %#x, the base of anti-rollback counter %#x, %s; the floor cannot be read, so no update is installed. "+
		"If the TPM owner deleted or changed an index on purpose, undefine both (tpm2_nvundefine %#x; tpm2_nvundefine %#x; whichever exist): "+
		"twinslot then starts a new TPM floor at 0 and the floor file keeps the old floor. If nobody did, treat the host as tampered with",
		uint32(e.Base), uint32(e.Counter), e.Problem, uint32(e.Counter), uint32(e.Base))
}

func (t *TPM) baseError(format string, a ...any) error {
	return &BaseError{Counter: t.index(), Base: t.baseIndex(), Problem: fmt.Sprintf(format, a...)}
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// Attributes of the two indices. counterAttrs leave out TPMA_NV_AUTHREAD/AUTHWRITE, which the
// counters of twinslot before the base index had: that is how such a counter is recognised.
// baseAttrs make the base writable once: TPM2_NV_WriteLock on a written TPMA_NV_WRITEDEFINE
// index holds until the index is deleted, across TPM resets.
func counterAttrs() tpm2.TPMANV {
	return tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, NT: tpm2.TPMNTCounter, NoDA: true}
}

func baseAttrs() tpm2.TPMANV {
	return tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, WriteAll: true, WriteDefine: true, NT: tpm2.TPMNTOrdinary, NoDA: true}
}

// counterState is what the TPM holds at the counter index.
type counterState struct {
	defined bool
	legacy  bool // defined by a twinslot before the base index: its value is the floor
	written bool // incremented at least once
	value   uint64
	name    tpm2.TPM2BName
}

// baseState is what the TPM holds at the base index.
type baseState struct {
	defined, written, locked bool
	value                    uint64
	name                     tpm2.TPM2BName
}

// public reads index h's public area and its current Name (which changes when the index is
// first written and when it is locked); ok is false when h is not defined.
func (t *TPM) public(h tpm2.TPMHandle) (pub *tpm2.TPMSNVPublic, name tpm2.TPM2BName, ok bool, err error) {
	r, err := tpm2.NVReadPublic{NVIndex: h}.Execute(t.T)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, name, false, nil
	}
	if err != nil {
		return nil, name, false, fmt.Errorf("floor: TPM NV_ReadPublic %#x: %w", uint32(h), err)
	}
	if pub, err = r.NVPublic.Contents(); err != nil {
		return nil, name, false, fmt.Errorf("floor: TPM NV public area of %#x: %w", uint32(h), err)
	}
	return pub, r.NVName, true, nil
}

func (t *TPM) read(h tpm2.TPMHandle, name tpm2.TPM2BName, size uint16) ([]byte, error) {
	r, err := tpm2.NVRead{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: h, Name: name}, Size: size}.Execute(t.T)
	if err != nil {
		return nil, fmt.Errorf("floor: TPM NV_Read %#x: %w", uint32(h), err)
	}
	if len(r.Data.Buffer) != int(size) {
		return nil, fmt.Errorf("floor: TPM NV_Read %#x returned %d bytes, want %d", uint32(h), len(r.Data.Buffer), size)
	}
	return r.Data.Buffer, nil
}

func (t *TPM) counter() (counterState, error) {
	pub, name, ok, err := t.public(t.index())
	if err != nil || !ok {
		return counterState{}, err
	}
	if pub.Attributes.NT != tpm2.TPMNTCounter {
		return counterState{}, fmt.Errorf("floor: TPM NV index %#x exists but is not a counter; another program uses it", uint32(t.index()))
	}
	c := counterState{defined: true, legacy: pub.Attributes.AuthWrite, written: pub.Attributes.Written, name: name}
	if c.written {
		b, err := t.read(t.index(), name, 8)
		if err != nil {
			return counterState{}, err
		}
		c.value = binary.BigEndian.Uint64(b)
	}
	return c, nil
}

func (t *TPM) base() (baseState, error) {
	pub, name, ok, err := t.public(t.baseIndex())
	if err != nil || !ok {
		return baseState{}, err
	}
	attrs := pub.Attributes
	b := baseState{defined: true, written: attrs.Written, locked: attrs.WriteLocked, name: name}
	attrs.Written, attrs.WriteLocked = false, false
	if attrs != baseAttrs() || pub.DataSize != baseSize {
		return baseState{}, t.baseError("is not a twinslot base index (attributes %#x, %d bytes)", tpm2.Marshal(pub.Attributes), pub.DataSize)
	}
	if !b.written {
		return b, nil
	}
	d, err := t.read(t.baseIndex(), name, baseSize)
	if err != nil {
		return baseState{}, err
	}
	if string(d[:4]) != baseMagic {
		return baseState{}, t.baseError("does not hold a twinslot base (%x)", d)
	}
	if f := binary.BigEndian.Uint32(d[4:8]); f != BaseFormat {
		return baseState{}, t.baseError("has format %d, not %d (written by another twinslot version?)", f, BaseFormat)
	}
	b.value = binary.BigEndian.Uint64(d[8:])
	return b, nil
}

// state reads both indices; a counter of an earlier twinslot version has no base.
func (t *TPM) state() (counterState, baseState, error) {
	c, err := t.counter()
	if err != nil || c.legacy {
		return c, baseState{}, err
	}
	b, err := t.base()
	return c, b, err
}

// floorOf computes the floor from the two indices. It is 0 until the base is written: before
// that the counter is undefined, never incremented, or holds the value of its first increment,
// which is the base. It never guesses a base: any other combination is a *BaseError.
func (t *TPM) floorOf(c counterState, b baseState) (uint64, error) {
	switch {
	case c.legacy:
		return c.value, nil // 0 if never incremented
	case c.defined && !b.defined:
		return 0, t.baseError("is missing")
	case !b.written:
		return 0, nil // first use, or initialisation interrupted
	case !c.defined:
		return 0, t.baseError("is set (%d) but the counter is missing", b.value)
	case !c.written:
		return 0, t.baseError("is set (%d) but the counter was never incremented (it was deleted and defined again)", b.value)
	case c.value < b.value:
		return 0, t.baseError("is %d, above the counter's %d", b.value, c.value)
	}
	return c.value - b.value, nil
}

// Get reads the floor; on a TPM where neither index is defined it is 0.
func (t *TPM) Get(context.Context) (uint64, error) {
	c, b, err := t.state()
	if err != nil {
		return 0, err
	}
	return t.floorOf(c, b)
}

func (t *TPM) define(h tpm2.TPMHandle, attrs tpm2.TPMANV, size uint16) error {
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHOwner,
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{NVIndex: h, NameAlg: tpm2.TPMAlgSHA256, Attributes: attrs, DataSize: size}),
	}.Execute(t.T)
	if err != nil && !errors.Is(err, tpm2.TPMRCNVDefined) {
		return fmt.Errorf("floor: TPM NV_DefineSpace %#x: %w", uint32(h), err)
	}
	return nil
}

func (t *TPM) increment(name tpm2.TPM2BName) error {
	if _, err := (tpm2.NVIncrement{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.index(), Name: name}}).Execute(t.T); err != nil {
		return fmt.Errorf("floor: TPM NV_Increment %#x: %w", uint32(t.index()), err)
	}
	return nil
}

// initStep takes the next step of initialising the floor's indices, chosen from what the TPM
// holds: replace a never-incremented counter of an earlier twinslot, define the base, define
// the counter, increment it once (it then holds the highest value any counter of this TPM ever
// had, plus one), write that value into the base, write-lock the base. Each step is durable in
// the TPM, so after a crash the next call resumes where the last one stopped, and the floor
// reads 0 throughout. done reports that the base is written and locked.
func (t *TPM) initStep() (done bool, err error) {
	c, b, err := t.state()
	if err != nil {
		return false, err
	}
	switch {
	case c.legacy && !c.written:
		// An earlier twinslot defined it but never raised the floor: nothing to keep.
		_, err := tpm2.NVUndefineSpace{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.index(), Name: c.name}}.Execute(t.T)
		if err != nil {
			return false, fmt.Errorf("floor: TPM NV_UndefineSpace %#x (an unused counter of an earlier twinslot): %w", uint32(t.index()), err)
		}
		return false, nil
	case c.legacy || b.written && b.locked:
		return true, nil
	case !b.defined:
		return false, t.define(t.baseIndex(), baseAttrs(), baseSize)
	case !c.defined:
		return false, t.define(t.index(), counterAttrs(), 8)
	case !c.written:
		return false, t.increment(c.name)
	case !b.written:
		d := binary.BigEndian.AppendUint32([]byte(baseMagic), BaseFormat)
		d = binary.BigEndian.AppendUint64(d, c.value)
		_, err := tpm2.NVWrite{
			AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.baseIndex(), Name: b.name},
			Data: tpm2.TPM2BMaxNVBuffer{Buffer: d},
		}.Execute(t.T)
		if err != nil {
			return false, fmt.Errorf("floor: TPM NV_Write %#x: %w", uint32(t.baseIndex()), err)
		}
		return false, nil
	default:
		_, err := tpm2.NVWriteLock{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: t.baseIndex(), Name: b.name}}.Execute(t.T)
		if err != nil {
			return false, fmt.Errorf("floor: TPM NV_WriteLock %#x: %w", uint32(t.baseIndex()), err)
		}
		return false, nil
	}
}

// Advance increments the counter until the floor is at least v and returns the floor. On first
// use, or after an interrupted first use, it initialises the indices first.
func (t *TPM) Advance(ctx context.Context, v uint64) (uint64, error) {
	c, b, err := t.state()
	if err != nil {
		return 0, err
	}
	cur, err := t.floorOf(c, b)
	if err != nil {
		return 0, err
	}
	pending := !c.legacy && b.defined && !(b.written && b.locked)
	if cur >= v && !pending {
		return cur, nil
	}
	if v > cur && v-cur > MaxAdvance {
		return cur, fmt.Errorf("floor: advancing the TPM floor from %d to %d needs more than %d increments; raise security versions in small steps", cur, v, MaxAdvance)
	}
	for done, i := false, 0; !done; i++ {
		if i > initSteps {
			return cur, fmt.Errorf("floor: TPM NV indices %#x and %#x did not initialise in %d steps", uint32(t.index()), uint32(t.baseIndex()), initSteps)
		}
		if done, err = t.initStep(); err != nil {
			return cur, err
		}
	}
	if c, b, err = t.state(); err != nil {
		return cur, err
	}
	for i := 0; ; i++ {
		if cur, err = t.floorOf(c, b); err != nil {
			return 0, err
		}
		if cur >= v {
			return cur, nil
		}
		if err := ctx.Err(); err != nil {
			return cur, err
		}
		if i >= MaxAdvance {
			return cur, fmt.Errorf("floor: TPM floor did not reach %d after %d increments (at %d)", v, MaxAdvance, cur)
		}
		if err := t.increment(c.name); err != nil {
			return cur, err
		}
		if c, err = t.counter(); err != nil {
			return cur, err
		}
	}
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
