package partition

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// device is what a Disk reads and writes: an *os.File, or in tests a wrapper that stops
// or tears writes to simulate a crash.
type device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Disk is a GPT disk (an image file or a block device) holding /usr slots. Every method reads
// the table afresh, so a Disk never acts on stale attributes. Methods are safe for
// concurrent use; an open read-write Disk holds an exclusive advisory lock (flock) on the
// file so that two processes never change one table at once.
type Disk struct {
	mu       sync.Mutex
	f        *os.File
	dev      device
	path     string
	size     int64
	ss       int
	readOnly bool
}

// Option changes how Open opens a disk.
type Option func(*options)

type options struct {
	readOnly   bool
	sectorSize int
	lockWait   time.Duration
	waitSet    bool
}

// DefaultBlockLockWait is how long Open waits for the lock of a block device. udev takes a
// shared lock on a disk while it probes it again after every close of a writer (systemd's
// block device locking), which under load can take a second or more.
const DefaultBlockLockWait = 15 * time.Second

// LockWait sets how long a read-write Open waits for another holder of the lock to let go
// before it fails with ErrBusy (default: DefaultBlockLockWait for a block device, 0 for an
// image file).
func LockWait(d time.Duration) Option { return func(o *options) { o.lockWait, o.waitSet = d, true } }

// ReadOnly opens the disk without write access and without taking the lock, so it works
// while another process has it open for writing. Writes return ErrReadOnly.
func ReadOnly() Option { return func(o *options) { o.readOnly = true } }

// SectorSize sets the logical sector size of an image file (default 512). Block devices
// report their own and ignore it.
func SectorSize(n int) Option { return func(o *options) { o.sectorSize = n } }

// Open opens the GPT disk at path: an image file or a block device. It does not use O_EXCL
// (the booted disk has mounted partitions) and never asks the kernel to re-read the table
// (only attribute bits change). Opened read-write it takes an exclusive flock on the file,
// waiting up to the LockWait for another holder (udev probing a block device), and fails
// with ErrBusy when it is still held. It checks the table and fails with ErrNotGPT,
// ErrBothTablesCorrupt or ErrUnsupportedTable when there is none to use.
func Open(path string, opts ...Option) (*Disk, error) {
	o := options{sectorSize: 512}
	for _, opt := range opts {
		opt(&o)
	}
	flag := os.O_RDWR
	if o.readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	d, err := newDisk(f, path, o)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// lock takes the exclusive flock of f, trying again every lockPoll until wait has passed.
func lock(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || !time.Now().Before(deadline) {
			return err
		}
		time.Sleep(lockPoll)
	}
}

const lockPoll = 50 * time.Millisecond

func newDisk(f *os.File, path string, o options) (*Disk, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	d := &Disk{f: f, dev: f, path: path, ss: o.sectorSize, readOnly: o.readOnly}
	switch m := st.Mode(); {
	case m.IsRegular():
		d.size = st.Size()
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		if d.size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("open disk %s: size of block device: %w", path, err)
		}
		if d.ss, err = unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err != nil {
			return nil, fmt.Errorf("open disk %s: sector size of block device: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("open disk %s: not a regular file or block device (%v)", path, m)
	}
	if !o.readOnly {
		wait := o.lockWait
		if !o.waitSet && st.Mode()&os.ModeDevice != 0 {
			wait = DefaultBlockLockWait
		}
		if err := lock(f, wait); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: another process is changing %s (lock held for %v); retry when it has finished", ErrBusy, path, wait)
			}
			return nil, fmt.Errorf("open disk %s: lock: %w", path, err)
		}
	}
	if _, err := d.read(); err != nil {
		return nil, err
	}
	return d, nil
}

// Close releases the lock and closes the disk.
func (d *Disk) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}

// Path is the path the disk was opened with.
func (d *Disk) Path() string { return d.path }

// Size is the size of the disk in bytes.
func (d *Disk) Size() int64 { return d.size }

// SectorSize is the logical sector size in bytes.
func (d *Disk) SectorSize() int { return d.ss }

func (d *Disk) read() (*table, error) {
	if d.f == nil {
		return nil, errors.New("disk is closed")
	}
	t, err := readTable(d.dev, d.size, d.ss)
	if err != nil {
		return nil, fmt.Errorf("read GPT of %s: %w", d.path, err)
	}
	return t, nil
}

// Slots returns the /usr slots (partitions of type TypeUSR) in table order. The error
// wraps ErrNoSlots when there are none.
func (d *Disk) Slots() ([]Slot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.read()
	if err != nil {
		return nil, err
	}
	if len(t.slots) == 0 {
		return nil, fmt.Errorf("%w: %s has no partition of type %s", ErrNoSlots, d.path, TypeUSR)
	}
	return t.slots, nil
}

// SlotByLabel returns the slot whose partition name is label ("USR-A").
func (d *Disk) SlotByLabel(label string) (Slot, error) {
	return d.slotWhere("label "+label, func(s Slot) bool { return s.Label == label })
}

// SlotByNumber returns the slot with partition number n.
func (d *Disk) SlotByNumber(n int) (Slot, error) {
	return d.slotWhere(fmt.Sprintf("partition %d", n), func(s Slot) bool { return s.Number == n })
}

// SlotByPartUUID returns the slot whose unique partition GUID is id (any case).
func (d *Disk) SlotByPartUUID(id string) (Slot, error) {
	return d.slotWhere("PARTUUID "+id, func(s Slot) bool { return strings.EqualFold(s.PartUUID, id) })
}

// Slot finds a slot by label, partition number or PARTUUID, whichever name matches.
func (d *Disk) Slot(name string) (Slot, error) {
	return d.slotWhere(name, func(s Slot) bool {
		return s.Label == name || fmt.Sprint(s.Number) == name || strings.EqualFold(s.PartUUID, name)
	})
}

func (d *Disk) slotWhere(what string, match func(Slot) bool) (Slot, error) {
	slots, err := d.Slots()
	if err != nil {
		return Slot{}, err
	}
	for _, s := range slots {
		if match(s) {
			return s, nil
		}
	}
	return Slot{}, fmt.Errorf("%w: no /usr slot with %s on %s (slots: %s)", ErrUnknownSlot, what, d.path, describe(slots))
}

// Other returns the inactive partner of s (USR-B for USR-A and vice versa).
func (d *Disk) Other(s Slot) (Slot, error) {
	slots, err := d.Slots()
	if err != nil {
		return Slot{}, err
	}
	if _, err := current(slots, s); err != nil {
		return Slot{}, err
	}
	return Other(slots, s)
}

// NextBoot does what GRUB's gptprio.next does at boot: choose the slot (see Next) and,
// when its tries counter is > 0, decrement it and write the table. It returns the chosen
// slot with its updated attributes. Like GRUB it writes nothing when no counter changes.
func (d *Disk) NextBoot() (Slot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.read()
	if err != nil {
		return Slot{}, err
	}
	next, out, err := Next(t.slots)
	if err != nil {
		return Slot{}, fmt.Errorf("choose boot slot on %s: %w", d.path, err)
	}
	if next.Attr == attrOf(t.slots, next.Number) {
		return next, nil
	}
	if err := d.store(t, out, false); err != nil {
		return Slot{}, fmt.Errorf("choose boot slot on %s: %w", d.path, err)
	}
	return next, nil
}

// BeginInstall clears priority, tries and successful of s so that nothing boots or rolls
// back into it while it is being written. Call it before writing a new image into s.
func (d *Disk) BeginInstall(s Slot) error {
	return d.update("begin install into", s, PlanBeginInstall)
}

// PrepareInstall marks s, which now holds a new image, to be tried on the next boot:
// successful=0, tries=1, top priority, the others renumbered as cgpt prioritize does.
func (d *Disk) PrepareInstall(s Slot) error {
	return d.update("prepare install of", s, PlanInstall)
}

// MarkGood commits s after a healthy boot: successful=1, tries=0, top priority.
func (d *Disk) MarkGood(s Slot) error {
	return d.update("mark good", s, PlanMarkGood)
}

// MarkBad sets the priority of s to 0 so it is never booted again. It refuses (ErrNoBootableSlot)
// when no other slot could boot afterwards.
func (d *Disk) MarkBad(s Slot) error {
	return d.update("mark bad", s, PlanMarkBad)
}

// Rollback makes the partner of active boot next, when it holds an image that booted
// successfully before; otherwise the error is a *RollbackError (ErrRollbackRefused) with the
// reason and nothing is written. It returns the slot that boots next.
func (d *Disk) Rollback(active Slot) (Slot, error) {
	var target Slot
	err := d.update("roll back from", active, func(slots []Slot, n int) ([]Slot, error) {
		t, out, err := PlanRollback(slots, n)
		target = t
		return out, err
	})
	return target, err
}

// Repair rewrites both GPT copies from the one in use when either is damaged or they
// differ. It reports whether it wrote anything. With a copy in a layout this package does not
// write (see Health) it writes nothing and fails with ErrUnsupportedTable.
func (d *Disk) Repair() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.read()
	if err != nil {
		return false, err
	}
	if t.inSync() {
		return false, nil
	}
	if err := d.store(t, t.slots, true); err != nil {
		return false, fmt.Errorf("repair GPT of %s: %w", d.path, err)
	}
	return true, nil
}

// Health describes the two GPT copies.
type Health struct {
	PrimaryErr error // nil when the primary copy (LBA 1) is valid; wraps ErrUnsupportedTable when foreign
	BackupErr  error // nil when the backup copy (last LBA) is valid; wraps ErrUnsupportedTable when foreign
	InSync     bool  // both valid and identical
	DiskGUID   string
}

// Health checks both GPT copies. A damaged copy is repaired by Repair or by the next write;
// a foreign one (its error wraps ErrUnsupportedTable) makes every write fail and is never
// written.
func (d *Disk) Health() (Health, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.read()
	if err != nil {
		return Health{}, err
	}
	return Health{PrimaryErr: t.primary.err, BackupErr: t.backup.err, InSync: t.inSync(), DiskGUID: guidString(t.use.hdr.diskGUID)}, nil
}

// update applies plan to the slot s and writes the result, refusing any result from which
// no slot could boot.
func (d *Disk) update(op string, s Slot, plan func([]Slot, int) ([]Slot, error)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.readOnly {
		return fmt.Errorf("%s %v on %s: %w", op, s, d.path, ErrReadOnly)
	}
	t, err := d.read()
	if err != nil {
		return err
	}
	if _, err := current(t.slots, s); err != nil {
		return fmt.Errorf("%s %v on %s: %w", op, s, d.path, err)
	}
	out, err := plan(t.slots, s.Number)
	if err != nil {
		return fmt.Errorf("%s %v on %s: %w", op, s, d.path, err)
	}
	if _, _, err := Next(out); err != nil {
		return fmt.Errorf("%s %v on %s: refused, afterwards no slot could boot: %w", op, s, d.path, err)
	}
	if err := d.store(t, out, false); err != nil {
		return fmt.Errorf("%s %v on %s: %w", op, s, d.path, err)
	}
	return nil
}

// store writes slots into both copies, each write followed by a sync. When a write or sync
// fails it reads the table back and returns a *WriteError saying whether the change is in
// effect.
func (d *Disk) store(t *table, slots []Slot, force bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	ws, err := t.plan(slots, force)
	if err != nil {
		return err
	}
	for _, w := range ws {
		step := "write " + w.what
		_, err := d.dev.WriteAt(w.data, w.off)
		if err == nil {
			step = "sync " + w.what
			err = d.dev.Sync()
		}
		if err != nil {
			return d.writeFailed(step, err, slots)
		}
	}
	return nil
}

// writeFailed reads the table back after a failed write of want and says what it holds.
func (d *Disk) writeFailed(step string, err error, want []Slot) *WriteError {
	we := &WriteError{Step: step, Err: err}
	now, rerr := readTable(d.dev, d.size, d.ss)
	if rerr != nil {
		we.ReadErr = rerr
		return we
	}
	we.Applied = true
	for _, s := range want {
		if c, err := find(now.slots, s.Number); err != nil || c.Attr != s.Attr {
			we.Applied = false
		}
	}
	if next, _, err := Next(now.slots); err == nil {
		we.Next = next
	}
	return we
}

// current finds s in slots by number and checks it is the same partition (PARTUUID), so a
// Slot from another disk is never applied here.
func current(slots []Slot, s Slot) (Slot, error) {
	c, err := find(slots, s.Number)
	if err != nil {
		return Slot{}, err
	}
	if s.PartUUID != "" && !strings.EqualFold(c.PartUUID, s.PartUUID) {
		return Slot{}, fmt.Errorf("%w: partition %d has PARTUUID %s, not %s (a slot of another disk?)", ErrUnknownSlot, s.Number, c.PartUUID, s.PartUUID)
	}
	return c, nil
}

func attrOf(slots []Slot, n int) Attributes {
	s, _ := find(slots, n)
	return s.Attr
}

// SlotReader reads the bytes of slot s.
func (d *Disk) SlotReader(s Slot) *io.SectionReader {
	return io.NewSectionReader(d.dev, s.Start, s.Size)
}

// SlotWriter writes into slot s at offsets relative to its start. A write reaching past the
// end of the slot writes what fits and returns an error wrapping ErrOutOfSlot; on a
// read-only disk every write fails with ErrReadOnly.
func (d *Disk) SlotWriter(s Slot) io.WriterAt {
	return &slotWriter{d: d, s: s}
}

type slotWriter struct {
	d *Disk
	s Slot
}

func (w *slotWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.d.readOnly {
		return 0, fmt.Errorf("write to %v: %w", w.s, ErrReadOnly)
	}
	if off < 0 || off > w.s.Size {
		return 0, fmt.Errorf("write to %v at offset %d: %w (slot is %d bytes)", w.s, off, ErrOutOfSlot, w.s.Size)
	}
	n := int64(len(p))
	var tooLong bool
	if n > w.s.Size-off {
		n, tooLong = w.s.Size-off, true
	}
	k, err := w.d.dev.WriteAt(p[:n], w.s.Start+off)
	if err == nil && tooLong {
		err = fmt.Errorf("write of %d bytes to %v at offset %d: %w (slot is %d bytes)", len(p), w.s, off, ErrOutOfSlot, w.s.Size)
	}
	return k, err
}

// SlotIO is one slot as an install writes it: read and written at offsets relative to the
// slot's start, synced with the disk, and handed to the device range by range as it is written
// (StartWriteback), which is what payload.Install asks of a target.
type SlotIO struct {
	*io.SectionReader
	io.WriterAt
	d *Disk
	s Slot
}

// SlotIO returns slot s as an install target.
func (d *Disk) SlotIO(s Slot) *SlotIO {
	return &SlotIO{SectionReader: d.SlotReader(s), WriterAt: d.SlotWriter(s), d: d, s: s}
}

// Sync flushes the disk (Disk.Sync).
func (x *SlotIO) Sync() error { return x.d.Sync() }

// StartWriteback starts writing [off, off+n) of the slot to the device (Disk.StartWriteback).
func (x *SlotIO) StartWriteback(off, n int64) { x.d.StartWriteback(x.s, off, n) }

// Sync flushes written slot data and tables to stable storage.
func (d *Disk) Sync() error {
	if err := d.dev.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", d.path, err)
	}
	return nil
}
