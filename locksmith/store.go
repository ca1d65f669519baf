package locksmith

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is where the semaphore keys live unless a store is given another prefix.
const DefaultPrefix = "twinslot.io/locksmith/v1/"

// maxConflicts bounds how often one call re-reads after losing a transaction race. Every lost
// race means another writer made progress, so this is only reached under pathological churn.
const maxConflicts = 1000

// Store is the semaphore kept in etcd. It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	prefix string
	now    func() time.Time
}

// NewStore returns a store using cli under prefix ("" means DefaultPrefix). now stamps
// acquisition times; nil means time.Now.
func NewStore(cli *clientv3.Client, prefix string, now func() time.Time) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if now == nil {
		now = time.Now
	}
	return &Store{cli: cli, prefix: prefix, now: now}
}

// Lock is a slot held by this process: the group, the slot as written, and its fencing token
// (Slot.CreateRevision).
type Lock struct {
	Group string
	Slot  Slot
}

// Token is the fencing token of this tenure: the slot key's CreateRevision.
func (l Lock) Token() int64 { return l.Slot.CreateRevision }

func (s *Store) groupPrefix(g string) string   { return s.prefix + "groups/" + url.PathEscape(g) + "/" }
func (s *Store) configKey(g string) string     { return s.groupPrefix(g) + "config" }
func (s *Store) slotsPrefix(g string) string   { return s.groupPrefix(g) + "slots/" }
func (s *Store) queuePrefix(g string) string   { return s.groupPrefix(g) + "queue/" }
func (s *Store) queueKey(g, id string) string  { return s.queuePrefix(g) + url.PathEscape(id) }
func (s *Store) holdersPrefix(g string) string { return s.groupPrefix(g) + "holders/" }
func (s *Store) holderKey(g, id string) string { return s.holdersPrefix(g) + url.PathEscape(id) }
func (s *Store) slotKey(g string, i int) string {
	return fmt.Sprintf("%s%04d", s.slotsPrefix(g), i)
}

// GroupKeyPrefix is the etcd key prefix of group g's keys, for callers that watch them.
func (s *Store) GroupKeyPrefix(g string) string { return s.groupPrefix(g) }

// State reads group's semaphore at one revision.
func (s *Store) State(ctx context.Context, group string) (State, error) {
	return s.read(ctx, group, false)
}

// read reads the group. lenient replaces an unreadable config by the defaults (for SetConfig,
// which overwrites it).
func (s *Store) read(ctx context.Context, group string, lenient bool) (State, error) {
	if err := ValidateGroup(group); err != nil {
		return State{}, fmt.Errorf("locksmith: %w", err)
	}
	resp, err := s.cli.Get(leader(ctx), s.groupPrefix(group), clientv3.WithPrefix())
	if err != nil {
		return State{}, s.fail(ctx, group, "read the group", err)
	}
	st := State{Group: group, Config: DefaultConfig(), Revision: resp.Header.Revision}
	cfgKey, slots, queue, holders := s.configKey(group), s.slotsPrefix(group), s.queuePrefix(group), s.holdersPrefix(group)
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case k == cfgKey:
			st.ConfigRevision = kv.ModRevision
			var c GroupConfig
			err := decode(kv.Value, &c)
			if err == nil {
				err = c.Validate()
			}
			if err != nil && !lenient {
				return State{}, fmt.Errorf("locksmith: group %q: config key %s is unreadable (%v); rewrite it with locksmithctl set-max", group, k, err)
			}
			if err == nil {
				st.Config = c
			}
		case strings.HasPrefix(k, slots):
			st.Slots = append(st.Slots, parseSlot(strings.TrimPrefix(k, slots), kv))
		case strings.HasPrefix(k, queue):
			if id, err := url.PathUnescape(strings.TrimPrefix(k, queue)); err == nil {
				st.Queue = append(st.Queue, Waiter{ID: id, CreateRevision: kv.CreateRevision})
			}
		case strings.HasPrefix(k, holders):
			if id, err := url.PathUnescape(strings.TrimPrefix(k, holders)); err == nil {
				if st.HolderKeys == nil {
					st.HolderKeys = map[string]int64{}
				}
				st.HolderKeys[id] = kv.ModRevision
			}
		}
	}
	sort.Slice(st.Queue, func(i, j int) bool { return st.Queue[i].CreateRevision < st.Queue[j].CreateRevision })
	return st, nil
}

// parseSlot decodes a slot key. An unreadable slot still counts as taken (it is never safe to
// ignore a holder) and shows up under a pseudo id an operator can force-unlock.
func parseSlot(suffix string, kv *mvccpb.KeyValue) Slot {
	sl := Slot{Index: -1, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: kv.Lease}
	if i, err := strconv.Atoi(suffix); err == nil && i >= 0 && len(suffix) == 4 {
		sl.Index = i
	}
	err := decode(kv.Value, &sl.Holder)
	if err == nil {
		err = sl.Holder.Validate()
	}
	if err != nil || sl.Index < 0 {
		sl.Holder = Holder{Version: FormatVersion, ID: corruptPrefix + suffix, Note: fmt.Sprintf("unreadable slot key (%v)", err)}
	}
	return sl
}

func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode JSON: %w", err)
	}
	return nil
}

// TryLock takes a slot in group for h.ID, or re-locks the one it holds (updating boot id and
// versions; the acquisition time, and the state and note unless h sets them, are kept). A full
// group gives a *FullError at once.
func (s *Store) TryLock(ctx context.Context, group string, h Holder) (Lock, error) {
	lk, _, err := s.tryLock(ctx, group, h)
	return lk, err
}

// Lock is TryLock that waits, by watching the group, until a slot is free or ctx ends.
func (s *Store) Lock(ctx context.Context, group string, h Holder) (Lock, error) {
	lk, _, err := s.tryLock(ctx, group, h)
	if !errors.Is(err, ErrFull) {
		return lk, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	leave, err := s.enqueue(ctx, group, h.ID)
	if err != nil {
		return Lock{}, err
	}
	defer leave()
	var w *groupWatch
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	for {
		if w == nil {
			// Watch first, then read: every change after that read is delivered, and a watch
			// that starts at the current revision is served at once (one started at a past
			// revision waits for etcd's catch-up loop).
			if w, err = s.watchGroup(ctx, group); err != nil {
				return Lock{}, err
			}
		}
		lk, st, err := s.tryLock(ctx, group, h)
		if !errors.Is(err, ErrFull) {
			return lk, err
		}
		switch err := w.waitFree(ctx, st, h.ID); {
		case errors.Is(err, errWatchBroken):
			w.close()
			w = nil
		case err != nil:
			return Lock{}, err
		}
	}
}

// queueTTL is the lease of a queue entry, kept alive while its waiter waits: a waiter that dies
// holds its place for at most this long.
const queueTTL = 10

// enqueue puts id in group's queue on a kept-alive lease; leave takes it out.
func (s *Store) enqueue(ctx context.Context, group, id string) (leave func(), err error) {
	g, err := s.cli.Grant(leader(ctx), queueTTL)
	if err != nil {
		return nil, s.fail(ctx, group, "grant a queue lease", err)
	}
	kctx, stop := context.WithCancel(ctx)
	leave = func() {
		stop()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.cli.Revoke(rctx, g.ID) // deletes the queue key if the acquisition did not
	}
	// A put on a key that is still there (a waiter of the same id that queued before) keeps its
	// CreateRevision, so its place, and moves it onto this waiter's lease.
	if _, err := s.cli.Put(leader(ctx), s.queueKey(group, id), id, clientv3.WithLease(g.ID)); err != nil {
		leave()
		return nil, s.fail(ctx, group, "queue for a slot", err)
	}
	ka, err := s.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		leave()
		return nil, s.fail(ctx, group, "keep the queue lease alive", err)
	}
	go func() {
		for range ka { // drain: the client needs its keep-alive responses read
		}
	}()
	return leave, nil
}

func (s *Store) tryLock(ctx context.Context, group string, h Holder) (Lock, State, error) {
	h.Version = FormatVersion
	if err := h.Validate(); err != nil {
		return Lock{}, State{}, fmt.Errorf("locksmith: %w", err)
	}
	var ls leases
	defer ls.revokeUnused(ctx, s.cli)
	for range maxConflicts {
		st, err := s.State(ctx, group)
		if err != nil {
			return Lock{}, State{}, err
		}
		lk, ok, err := s.attempt(ctx, st, h, &ls)
		if err != nil || ok {
			return lk, st, err
		}
		// Someone else wrote first; decide again on fresh state.
	}
	return Lock{}, State{}, errRaces(group)
}

// attempt decides on st and commits the decision in one transaction. ok is false when the
// transaction's compares failed because the group changed since st was read.
func (s *Store) attempt(ctx context.Context, st State, h Holder, ls *leases) (lk Lock, ok bool, err error) {
	group := st.Group
	plan, err := PlanAcquire(st, h.ID)
	if err != nil {
		return Lock{}, false, err
	}
	key, hkey := s.slotKey(group, plan.Index), s.holderKey(group, h.ID)
	val := h
	// Whatever the plan, id's holder key must be as read: an acquisition for the same id
	// that committed meanwhile (on another slot) changed it.
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(hkey), "=", plan.HolderKeyRevision)}
	var ops []clientv3.Op
	var lease clientv3.LeaseID
	if plan.Relock {
		old := plan.Existing.Holder
		val.AcquiredAt, val.SeenAt = old.AcquiredAt, s.now().UTC()
		val.FromVersion = orOld(val.FromVersion, old.FromVersion)
		val.ToVersion = orOld(val.ToVersion, old.ToVersion)
		val.Hostname = orOld(val.Hostname, old.Hostname)
		// A re-lock does not undo what the holder recorded (e.g. that it rolled back).
		val.State = HolderState(orOld(string(val.State), string(old.State)))
		val.Note = orOld(val.Note, old.Note)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", plan.Existing.ModRevision))
		ops = append(ops, clientv3.OpPut(key, mustJSON(val), clientv3.WithIgnoreLease()))
		if plan.HolderKeyRevision == 0 {
			// A slot taken before holder keys existed: add its key, on the slot's lease.
			var opts []clientv3.OpOption
			if plan.Existing.Lease != 0 {
				opts = append(opts, clientv3.WithLease(clientv3.LeaseID(plan.Existing.Lease)))
			}
			ops = append(ops, clientv3.OpPut(hkey, strconv.Itoa(plan.Index), opts...))
		}
	} else {
		val.AcquiredAt = s.now().UTC()
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(s.configKey(group)), "=", st.ConfigRevision),
		)
		if plan.GuardAll {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.slotsPrefix(group)), "<", st.Revision+1).WithPrefix())
		}
		var opts []clientv3.OpOption
		if st.Config.Stale == StaleExpire {
			if lease, err = ls.get(ctx, s.cli, st.Config.LeaseTTLSeconds); err != nil {
				return Lock{}, false, s.fail(ctx, group, fmt.Sprintf("grant a %ds lease", st.Config.LeaseTTLSeconds), err)
			}
			opts = append(opts, clientv3.WithLease(lease))
		}
		// The holder key goes with the slot, on its lease; a key left behind by a slot deleted
		// without it (an older locksmith, a hand edit) is overwritten, as it was read.
		ops = append(ops, clientv3.OpPut(key, mustJSON(val), opts...),
			clientv3.OpPut(hkey, strconv.Itoa(plan.Index), opts...),
			clientv3.OpDelete(s.queueKey(group, h.ID))) // leave the queue in the same step
	}
	resp, err := s.cli.Txn(leader(ctx)).If(cmps...).Then(ops...).Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The lease kept from an earlier attempt expired meanwhile: grant a new one and retry.
		ls.id = 0
		return Lock{}, false, nil
	}
	if err != nil {
		return Lock{}, false, s.fail(ctx, group, fmt.Sprintf("take slot %d", plan.Index), err)
	}
	if !resp.Succeeded {
		return Lock{}, false, nil
	}
	sl := Slot{Index: plan.Index, Holder: val, CreateRevision: resp.Header.Revision, ModRevision: resp.Header.Revision, Lease: int64(lease)}
	if plan.Relock {
		sl.CreateRevision, sl.Lease = plan.Existing.CreateRevision, plan.Existing.Lease
	}
	ls.used = lease != 0
	return Lock{Group: group, Slot: sl}, true, nil
}

// leases keeps the lease granted for one acquisition across transaction retries, so a lost race
// does not cost a lease per attempt. A lease is reused only while young: the TTL runs from the
// grant, so a slot put on an old lease would expire early.
type leases struct {
	id      clientv3.LeaseID
	ttl     int64
	granted time.Time // monotonic; etcd times leases in real time
	used    bool
}

func (l *leases) get(ctx context.Context, cli *clientv3.Client, ttl int64) (clientv3.LeaseID, error) {
	if l.id != 0 && l.ttl == ttl && time.Since(l.granted) < time.Duration(ttl)*time.Second/10 {
		return l.id, nil
	}
	l.revokeUnused(ctx, cli)
	g, err := cli.Grant(leader(ctx), ttl)
	if err != nil {
		return 0, err
	}
	l.id, l.ttl, l.granted = g.ID, ttl, time.Now()
	return l.id, nil
}

// revokeUnused gives back a lease that ended up attached to nothing (it would expire anyway).
func (l *leases) revokeUnused(ctx context.Context, cli *clientv3.Client) {
	if l.id == 0 || l.used {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	cli.Revoke(rctx, l.id)
	l.id = 0
}

func orOld(newer, older string) string {
	if newer != "" {
		return newer
	}
	return older
}

func errRaces(group string) error {
	return fmt.Errorf("locksmith: group %q: lost %d transaction races in a row; is something rewriting the keys?", group, maxConflicts)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("locksmith: encode %T: %v", v, err)) // only plain structs are encoded
	}
	return string(b)
}

var errWatchBroken = errors.New("watch broken")

// groupWatch is a watch on a group's keys, kept across the retries of one Lock call.
type groupWatch struct {
	ch                   clientv3.WatchChan
	cancel               context.CancelFunc
	group                string
	cfgKey, slots, queue string
}

// watchGroup starts watching group's keys from the next revision and returns once etcd has
// registered the watch. The watch requires a leader: a member that loses its leader cancels it
// at once (with "no leader") rather than staying silent.
func (s *Store) watchGroup(ctx context.Context, group string) (*groupWatch, error) {
	wctx, cancel := context.WithCancel(leader(ctx))
	w := &groupWatch{ch: s.cli.Watch(wctx, s.groupPrefix(group), clientv3.WithPrefix(), clientv3.WithCreatedNotify()),
		cancel: cancel, group: group, cfgKey: s.configKey(group), slots: s.slotsPrefix(group), queue: s.queuePrefix(group)}
	select {
	case resp, ok := <-w.ch:
		if ok && resp.Created && resp.Err() == nil {
			return w, nil
		}
		cancel()
		err := ctx.Err()
		switch {
		case err != nil:
		case ok && resp.Err() != nil:
			err = resp.Err()
		default:
			err = errors.New("watch closed by the client")
		}
		return nil, s.fail(ctx, group, "watch for free slots", err)
	case <-ctx.Done():
		cancel()
		return nil, s.fail(ctx, group, "watch for free slots", ctx.Err())
	}
}

func (w *groupWatch) close() { w.cancel() }

// waitFree blocks until, after the state st was read, the group may have a slot for id: it
// follows the watch's events (slots freed or taken, waiters ahead leaving, max changing) and
// returns once holders plus waiters ahead of id are under max again. So a release wakes only
// the waiters it can admit, not the whole queue. errWatchBroken means the watch ended (leader
// loss): start a new one.
func (w *groupWatch) waitFree(ctx context.Context, st State, id string) error {
	maxHolders, holders, ahead := st.Config.Max, len(st.Slots), st.Ahead(id)
	before := map[string]bool{}
	for _, q := range st.Queue[:ahead] {
		before[w.queue+url.PathEscape(q.ID)] = true
	}
	for {
		select {
		case <-ctx.Done():
			return w.gaveUp(ctx, holders, maxHolders, ahead)
		case resp, ok := <-w.ch:
			if !ok || resp.Canceled || resp.Err() != nil {
				if ctx.Err() != nil {
					return w.gaveUp(ctx, holders, maxHolders, ahead)
				}
				return errWatchBroken
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision <= st.Revision {
					continue
				}
				k := string(ev.Kv.Key)
				switch {
				case k == w.cfgKey:
					var c GroupConfig
					if ev.Type == clientv3.EventTypeDelete || decode(ev.Kv.Value, &c) != nil {
						return nil // re-read to know
					}
					maxHolders = c.Max
				case strings.HasPrefix(k, w.slots) && ev.Type == clientv3.EventTypeDelete:
					holders--
				case strings.HasPrefix(k, w.slots) && ev.IsCreate():
					holders++
				case before[k] && ev.Type == clientv3.EventTypeDelete:
					delete(before, k)
					ahead--
				}
			}
			if holders+ahead < maxHolders {
				return nil
			}
		}
	}
}

// gaveUp is the error of a wait for a free slot that ended with ctx: etcd was fine, the group
// stayed full.
func (w *groupWatch) gaveUp(ctx context.Context, holders, maxHolders, ahead int) error {
	return fmt.Errorf("locksmith: group %q: gave up waiting for a free slot (%d of max %d held, %d queued ahead): %w",
		w.group, holders, maxHolders, ahead, ctx.Err())
}

// leader makes a request fail at once with "no leader" when the member it reaches has none,
// instead of waiting out the caller's deadline (the issue-19 symptom during quorum loss).
func leader(ctx context.Context) context.Context { return clientv3.WithRequireLeader(ctx) }

// Release gives up the slot of lk. It fails with ErrLost if the slot is no longer lk's tenure
// (broken by an operator, expired, or already released).
func (s *Store) Release(ctx context.Context, lk Lock) error {
	key := s.slotKey(lk.Group, lk.Slot.Index)
	resp, err := s.cli.Txn(leader(ctx)).If(clientv3.Compare(clientv3.CreateRevision(key), "=", lk.Token())).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(s.holderKey(lk.Group, lk.Slot.Holder.ID))).Commit()
	if err != nil {
		return s.fail(ctx, lk.Group, fmt.Sprintf("release slot %d", lk.Slot.Index), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("locksmith: group %q: release slot %d: %w (broken by an operator, expired, or already released)", lk.Group, lk.Slot.Index, ErrLost)
	}
	return nil
}

// Update rewrites the holder value of lk with fn applied (and SeenAt set to now), only if lk is
// still the slot's tenure. It doubles as an ownership check right before a reboot, and with a
// fn that changes nothing it records that the holder is alive (Touch).
func (s *Store) Update(ctx context.Context, lk Lock, fn func(*Holder)) (Lock, error) {
	h := lk.Slot.Holder
	fn(&h)
	h.Version, h.SeenAt = FormatVersion, s.now().UTC()
	if err := h.Validate(); err != nil {
		return lk, fmt.Errorf("locksmith: %w", err)
	}
	key := s.slotKey(lk.Group, lk.Slot.Index)
	resp, err := s.cli.Txn(leader(ctx)).If(clientv3.Compare(clientv3.CreateRevision(key), "=", lk.Token())).
		Then(clientv3.OpPut(key, mustJSON(h), clientv3.WithIgnoreLease())).Commit()
	if err != nil {
		return lk, s.fail(ctx, lk.Group, fmt.Sprintf("update slot %d", lk.Slot.Index), err)
	}
	if !resp.Succeeded {
		return lk, fmt.Errorf("locksmith: group %q: update slot %d: %w", lk.Group, lk.Slot.Index, ErrLost)
	}
	lk.Slot.Holder, lk.Slot.ModRevision = h, resp.Header.Revision
	return lk, nil
}

// Touch records that lk's holder is alive (SeenAt = now), so status does not flag it as stale.
func (s *Store) Touch(ctx context.Context, lk Lock) (Lock, error) {
	return s.Update(ctx, lk, func(*Holder) {})
}

// Held returns the slot id holds in group, as a Lock, or ErrNotHeld.
func (s *Store) Held(ctx context.Context, group, id string) (Lock, error) {
	st, err := s.State(ctx, group)
	if err != nil {
		return Lock{}, err
	}
	sl, ok := st.Holding(id)
	if !ok {
		return Lock{}, fmt.Errorf("locksmith: %w: %s holds no slot in group %q", ErrNotHeld, id, group)
	}
	return Lock{Group: group, Slot: sl}, nil
}

// Unlock deletes target's slot on requester's behalf. Without force only the holder itself
// (requester == target) may do that. It returns the released holder, or ErrNotHeld.
func (s *Store) Unlock(ctx context.Context, group, requester, target string, force bool) (Holder, error) {
	for range maxConflicts {
		st, err := s.State(ctx, group)
		if err != nil {
			return Holder{}, err
		}
		sl, err := PlanRelease(st, requester, target, force)
		if err != nil {
			return Holder{}, fmt.Errorf("locksmith: %w", err)
		}
		key := s.slotKeyOf(group, sl)
		resp, err := s.cli.Txn(leader(ctx)).If(clientv3.Compare(clientv3.ModRevision(key), "=", sl.ModRevision)).
			Then(clientv3.OpDelete(key), clientv3.OpDelete(s.holderKey(group, sl.Holder.ID))).Commit()
		if err != nil {
			return Holder{}, s.fail(ctx, group, fmt.Sprintf("release %s's slot", target), err)
		}
		if resp.Succeeded {
			return sl.Holder, nil
		}
	}
	return Holder{}, errRaces(group)
}

// slotKeyOf is the key a read slot came from (also for unreadable ones, whose id is derived;
// ValidateID keeps real ids out of corruptPrefix).
func (s *Store) slotKeyOf(group string, sl Slot) string {
	if suffix, ok := strings.CutPrefix(sl.Holder.ID, corruptPrefix); ok {
		return s.slotsPrefix(group) + suffix
	}
	return s.slotKey(group, sl.Index)
}

// SetConfig changes group's config with fn and returns the old and new config. Holders are never
// removed: lowering max below their number only stops new ones.
func (s *Store) SetConfig(ctx context.Context, group string, fn func(GroupConfig) GroupConfig) (old, updated GroupConfig, err error) {
	for range maxConflicts {
		st, err := s.read(ctx, group, true)
		if err != nil {
			return GroupConfig{}, GroupConfig{}, err
		}
		c, err := PlanConfig(st, fn(st.Config))
		if err != nil {
			return GroupConfig{}, GroupConfig{}, err
		}
		key := s.configKey(group)
		resp, err := s.cli.Txn(leader(ctx)).If(clientv3.Compare(clientv3.ModRevision(key), "=", st.ConfigRevision)).
			Then(clientv3.OpPut(key, mustJSON(c))).Commit()
		if err != nil {
			return GroupConfig{}, GroupConfig{}, s.fail(ctx, group, "write the config", err)
		}
		if resp.Succeeded {
			return st.Config, c, nil
		}
	}
	return GroupConfig{}, GroupConfig{}, errRaces(group)
}

// SetMax sets group's max and returns the previous one.
func (s *Store) SetMax(ctx context.Context, group string, n int) (int, error) {
	old, _, err := s.SetConfig(ctx, group, func(c GroupConfig) GroupConfig { c.Max = n; return c })
	return old.Max, err
}
