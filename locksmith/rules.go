package locksmith

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
)

// FormatVersion is the version written into every config and holder value.
const FormatVersion = 1

// Limits on what the semaphore accepts. They bound keys and values written to etcd.
const (
	// MaxSlots bounds a group's max (slot indexes have four digits).
	MaxSlots = 9999
	// MaxIDLen bounds a holder id.
	MaxIDLen = 256
	// MaxGroupLen bounds a group name.
	MaxGroupLen = 128
	// MaxFieldLen bounds the free-text fields of a holder (versions, host name, note).
	MaxFieldLen = 256
	// DefaultGroup is the group used when none is given (FleetLock's default group name too).
	DefaultGroup = "default"
)

// StalePolicy says what happens to a slot whose holder never releases it.
type StalePolicy string

const (
	// StaleHold keeps the slot until the holder or an operator releases it (the default), so a
	// host that died or rolled back stops the group's rollout.
	StaleHold StalePolicy = "hold"
	// StaleExpire attaches new slots to an etcd lease of the group's TTL, never kept alive.
	StaleExpire StalePolicy = "expire"
)

// GroupConfig is the value of a group's config key.
type GroupConfig struct {
	Version int `json:"version"`
	// Max is the number of hosts that may hold a slot at once.
	Max int `json:"max"`
	// LeaseTTLSeconds is the holder TTL; 0 means none.
	LeaseTTLSeconds int64 `json:"lease_ttl_seconds"`
	// Stale is the stale policy; empty means StaleHold.
	Stale StalePolicy `json:"stale"`
}

// DefaultConfig is the config of a group that has no config key yet.
func DefaultConfig() GroupConfig {
	return GroupConfig{Version: FormatVersion, Max: 1, Stale: StaleHold}
}

// LeaseTTL returns the TTL as a duration.
func (c GroupConfig) LeaseTTL() time.Duration { return time.Duration(c.LeaseTTLSeconds) * time.Second }

// Validate checks a config read from etcd or given by an operator.
func (c GroupConfig) Validate() error {
	switch {
	case c.Version != FormatVersion:
		return fmt.Errorf("config version %d is not %d: written by a newer locksmith? upgrade this one", c.Version, FormatVersion)
	case c.Max < 0 || c.Max > MaxSlots:
		return fmt.Errorf("max %d is out of range 0..%d", c.Max, MaxSlots)
	case c.LeaseTTLSeconds < 0:
		return fmt.Errorf("lease TTL %ds is negative", c.LeaseTTLSeconds)
	case c.Stale != "" && c.Stale != StaleHold && c.Stale != StaleExpire:
		return fmt.Errorf("stale policy %q is not %q or %q", c.Stale, StaleHold, StaleExpire)
	case c.Stale == StaleExpire && c.LeaseTTLSeconds == 0:
		return fmt.Errorf("stale policy %q needs a lease TTL", StaleExpire)
	}
	return nil
}

// HolderState is what a holder is doing with its slot.
type HolderState string

const (
	// HolderLocked: the slot is taken (by a daemon about to reboot, or by locksmithctl lock).
	HolderLocked HolderState = ""
	// HolderRebooting: the holder asked logind to reboot.
	HolderRebooting HolderState = "rebooting"
	// HolderRolledBack: the holder's new boot failed and it fell back; it keeps the slot on purpose.
	HolderRolledBack HolderState = "rolled-back"
)

// Holder is the value of a slot key.
type Holder struct {
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	BootID      string    `json:"boot_id,omitempty"`
	Hostname    string    `json:"hostname,omitempty"`
	FromVersion string    `json:"from_version,omitempty"`
	ToVersion   string    `json:"to_version,omitempty"`
	AcquiredAt  time.Time `json:"acquired_at"`
	// SeenAt is the last time the holder wrote its slot (re-locked it, marked it rebooting or
	// rolled back, or found it again after a boot); zero means only AcquiredAt.
	SeenAt time.Time   `json:"seen_at,omitzero"`
	State  HolderState `json:"state,omitempty"`
	Note   string      `json:"note,omitempty"`
}

// Validate checks a holder before it is written or after it is read.
func (h Holder) Validate() error {
	if h.Version != FormatVersion {
		return fmt.Errorf("holder version %d is not %d: written by a newer locksmith? upgrade this one", h.Version, FormatVersion)
	}
	if err := ValidateID(h.ID); err != nil {
		return err
	}
	for name, v := range map[string]string{"boot id": h.BootID, "host name": h.Hostname, "from version": h.FromVersion,
		"to version": h.ToVersion, "state": string(h.State), "note": h.Note} {
		if len(v) > MaxFieldLen {
			return fmt.Errorf("holder %s is longer than %d bytes", name, MaxFieldLen)
		}
	}
	return nil
}

// corruptPrefix starts the id under which a slot key that cannot be read is shown (its key
// suffix follows), so an operator can release it; no real holder id may start with it.
const corruptPrefix = "corrupt:"

// ValidateID checks a holder id: 1..MaxIDLen printable characters without spaces, not starting
// with the prefix that names unreadable slot keys ("corrupt:").
func ValidateID(id string) error {
	if id == "" {
		return errors.New("holder id is empty; pass --id or check /etc/machine-id")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("holder id is longer than %d bytes", MaxIDLen)
	}
	if strings.IndexFunc(id, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
		return fmt.Errorf("holder id %q has spaces or unprintable characters", id)
	}
	if strings.HasPrefix(id, corruptPrefix) {
		return fmt.Errorf("holder id %q starts with %q, which names unreadable slot keys; use another id", id, corruptPrefix)
	}
	return nil
}

// ValidateGroup checks a group name: 1..MaxGroupLen printable characters.
func ValidateGroup(g string) error {
	if g == "" {
		return errors.New("group name is empty")
	}
	if len(g) > MaxGroupLen {
		return fmt.Errorf("group name is longer than %d bytes", MaxGroupLen)
	}
	if strings.IndexFunc(g, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("group name %q has unprintable characters", g)
	}
	return nil
}

// Slot is one taken slot as read from etcd.
type Slot struct {
	Index  int
	Holder Holder
	// CreateRevision is the revision that created the slot key: the fencing token of this tenure.
	CreateRevision int64
	// ModRevision is the revision of the last write to the slot key.
	ModRevision int64
	// Lease is the etcd lease the key is attached to, 0 for none.
	Lease int64
}

// State is a group's semaphore as read at one etcd revision.
type State struct {
	Group string
	// Config is the stored config, or DefaultConfig when ConfigRevision is 0.
	Config GroupConfig
	// ConfigRevision is the config key's ModRevision, 0 when the key is absent.
	ConfigRevision int64
	// Slots are the taken slots, by index.
	Slots []Slot
	// Queue are the hosts waiting for a slot, first come first.
	Queue []Waiter
	// HolderKeys are the ModRevisions of the holders/<id> keys, by id. A holder key is written
	// with its slot and deleted with it; an acquisition requires it unchanged, which is what
	// keeps one id from holding two slots.
	HolderKeys map[string]int64
	// Revision is the etcd revision the state was read at.
	Revision int64
}

// Waiter is a host queued for a slot (by Store.Lock). Its key lives on a lease kept alive while
// it waits, so the queue forgets a waiter that died.
type Waiter struct {
	ID string
	// CreateRevision orders the queue.
	CreateRevision int64
}

// Ahead is how many queued waiters come before id: all of them if id is not queued.
func (s State) Ahead(id string) int {
	for _, w := range s.Queue {
		if w.ID == id {
			n := 0
			for _, o := range s.Queue {
				if o.CreateRevision < w.CreateRevision {
					n++
				}
			}
			return n
		}
	}
	return len(s.Queue)
}

// Holding returns the slot id holds, if any.
func (s State) Holding(id string) (Slot, bool) {
	for _, sl := range s.Slots {
		if sl.Holder.ID == id {
			return sl, true
		}
	}
	return Slot{}, false
}

// Available is the number of slots a new holder could take now (never negative).
func (s State) Available() int { return max(0, s.Config.Max-len(s.Slots)) }

// Stale reports whether a slot is older than the group's lease TTL at now. Under StaleHold this
// is only reported; under StaleExpire etcd deletes such a slot by itself.
func (s State) Stale(sl Slot, now time.Time) bool {
	ttl := s.Config.LeaseTTL()
	return ttl > 0 && now.Sub(sl.Holder.AcquiredAt) > ttl
}

// DefaultStaleAfter is how long a holder may go unseen before status and metrics flag it as
// probably stale. Flagging never frees a slot: only an operator (or StaleExpire) does.
const DefaultStaleAfter = time.Hour

// LastSeen is the last time the holder of sl was heard from: SeenAt, or AcquiredAt before it
// wrote anything else.
func (sl Slot) LastSeen() time.Time {
	if sl.Holder.SeenAt.After(sl.Holder.AcquiredAt) {
		return sl.Holder.SeenAt
	}
	return sl.Holder.AcquiredAt
}

// Unseen reports whether sl's holder has not been heard from for longer than after (0 turns
// the check off). Like Stale, it only reports.
func (s State) Unseen(sl Slot, now time.Time, after time.Duration) bool {
	return after > 0 && now.Sub(sl.LastSeen()) > after
}

// overflow reports whether a holder sits at an index >= max (max was lowered under it) or at
// no index at all (an unreadable key), so that slot indexes alone do not bound the count.
func (s State) overflow() bool {
	for _, sl := range s.Slots {
		if sl.Index >= s.Config.Max || sl.Index < 0 {
			return true
		}
	}
	return false
}

// AcquirePlan is what PlanAcquire decided to write.
type AcquirePlan struct {
	// Index is the slot to write.
	Index int
	// Relock is true when id already holds Index and only its value is rewritten.
	Relock bool
	// Existing is the slot being rewritten when Relock.
	Existing Slot
	// GuardAll asks the transaction to also require that no slot changed since the read,
	// because holders above max make the slot index alone no proof of the count.
	GuardAll bool
	// HolderKeyRevision is the ModRevision of id's holder key at the read, 0 when there is none.
	// The transaction requires it unchanged, so two acquisitions for one id decided on
	// different reads cannot both commit (each would take another free slot).
	HolderKeyRevision int64
}

// PlanAcquire decides how id takes a slot in s. A holder re-locking its own slot always succeeds
// (whatever max is now); otherwise a free slot below max is taken only while the group holds
// fewer than max holders, and only if the free slots are not all owed to waiters queued before
// id (a caller that is not queued comes after every queued one). A full group gives a *FullError.
func PlanAcquire(s State, id string) (AcquirePlan, error) {
	if sl, ok := s.Holding(id); ok {
		return AcquirePlan{Index: sl.Index, Relock: true, Existing: sl, HolderKeyRevision: s.HolderKeys[id]}, nil
	}
	if len(s.Slots)+s.Ahead(id) >= s.Config.Max {
		return AcquirePlan{}, &FullError{Group: s.Group, Max: s.Config.Max, Holders: holderIDs(s.Slots), Waiting: len(s.Queue)}
	}
	taken := make(map[int]bool, len(s.Slots))
	for _, sl := range s.Slots {
		taken[sl.Index] = true
	}
	for i := 0; i < s.Config.Max; i++ {
		if !taken[i] {
			return AcquirePlan{Index: i, GuardAll: s.overflow(), HolderKeyRevision: s.HolderKeys[id]}, nil
		}
	}
	// Unreachable: fewer holders than max leave a free index below max.
	return AcquirePlan{}, fmt.Errorf("locksmith: group %q: no free slot below max %d with %d holders", s.Group, s.Config.Max, len(s.Slots))
}

// PlanRelease decides which slot to delete when requester asks to release target's slot. Only
// the holder itself may release unless force is set.
func PlanRelease(s State, requester, target string, force bool) (Slot, error) {
	if requester != target && !force {
		return Slot{}, fmt.Errorf("%w: %s may not release %s's slot; an operator can with locksmithctl unlock %s", ErrNotHolder, requester, target, target)
	}
	sl, ok := s.Holding(target)
	if !ok {
		return Slot{}, fmt.Errorf("%w: %s holds no slot in group %q", ErrNotHeld, target, s.Group)
	}
	return sl, nil
}

// PlanConfig validates a new config for s. Lowering max below the current holders is allowed:
// they keep their slots and nobody new is admitted until the group is under max.
func PlanConfig(s State, c GroupConfig) (GroupConfig, error) {
	c.Version = FormatVersion
	if c.Stale == "" {
		c.Stale = StaleHold
	}
	if err := c.Validate(); err != nil {
		return GroupConfig{}, fmt.Errorf("locksmith: group %q: %w", s.Group, err)
	}
	return c, nil
}

func holderIDs(slots []Slot) []string {
	ids := make([]string, len(slots))
	for i, sl := range slots {
		ids[i] = sl.Holder.ID
	}
	sort.Strings(ids)
	return ids
}
