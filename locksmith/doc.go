// Package locksmith is twinslot's reboot semaphore: at most Max hosts of a group may hold a
// reboot slot at once, stored in etcd v3 and changed only by transactions on revisions.
//
// The package has two layers. The rules (State, PlanAcquire, PlanRelease, PlanConfig) are pure:
// they look at a State value read at one etcd revision and decide what to write, with no I/O.
// Store applies a plan as one etcd transaction whose compares make the decision still valid at
// commit time; when a compare fails the store re-reads and decides again.
//
// # Key layout (format version 1)
//
// All keys live under a prefix, DefaultPrefix unless the caller chooses another. A group name G
// is stored path-escaped (url.PathEscape), so "prod/db" becomes "prod%2Fdb".
//
//	<prefix>groups/<G>/config        GroupConfig as JSON: {"version":1,"max":2,"lease_ttl_seconds":0,"stale":"hold"}
//	<prefix>groups/<G>/slots/<NNNN>  Holder as JSON: {"version":1,"id":"…","boot_id":"…","from_version":"…",
//	                                 "to_version":"…","acquired_at":"RFC 3339",…}; NNNN is the slot index, 4 digits
//	<prefix>groups/<G>/holders/<ID>  the slot index <ID> holds (value: decimal), written and deleted with
//	                                 that slot in one Txn and on the slot's lease; <ID> is path-escaped
//	<prefix>groups/<G>/queue/<ID>    a host waiting in Store.Lock (value: its id), on a lease kept alive
//	                                 while it waits (10s TTL); the queue is ordered by CreateRevision
//
// A missing config key means the defaults: max 1, no lease, stale policy "hold". Values carry a
// "version" field; a reader refuses a version it does not know rather than guess.
//
// # Transactions
//
//   - Acquire (a new holder) puts slots/<i> with i < max, the lowest free index, and holders/<ID>,
//     and deletes its queue key, in one Txn that requires CreateRevision(slots/<i>) == 0 (the
//     slot is free), ModRevision(config) == the revision read (max did not change) and
//     ModRevision(holders/<ID>) == the revision read (0: absent), so two acquisitions for one id
//     decided on different reads (locksmithctl lock, a FleetLock retry, two FleetLock servers)
//     cannot both commit on different slots. A holders/<ID> left without its slot (by an older
//     locksmith or a hand edit) is overwritten. While a lowered max leaves holders at indexes >=
//     max, the Txn also requires that no key under slots/ changed since the read, so holders that
//     were admitted under the old max are counted and nobody new is admitted until the group is
//     under max again. No compare spans the whole group: hosts of different ids contend only for
//     slot indexes.
//   - Re-lock by the current holder (same id) rewrites its own slot (new boot id, versions; state
//     and note are kept unless given) with ModRevision(slot) == read; it succeeds whatever max is
//     now. It adds holders/<ID> if the slot was taken before holder keys existed.
//   - Release deletes the holder's slot and holders/<ID> in one Txn: Store.Release on a Lock
//     requires CreateRevision(slot) == the Lock's token (below), Store.Unlock by id requires
//     ModRevision(slot) == read. Only the holder itself may release unless the caller forces it
//     (locksmithctl unlock ID). A Lock remembers the slot's CreateRevision as a fencing token:
//     Store.Release and Store.Update on a Lock fail with ErrLost if the slot was broken and taken
//     again meanwhile.
//   - SetMax and SetPolicy rewrite config with ModRevision(config) == read.
//
// # Invariant
//
// At every etcd revision the number of slots in a group is at most max, except after max was
// lowered below the number of holders at that moment: then the count only goes down until it is
// under max. Proof sketch: a slot is created only by Acquire; with no holder at an index >= max
// at read time every slot created under the same config has a distinct index < max; with one,
// the whole-slots compare makes the Txn see the exact holder set it counted.
//
// One id holds at most one slot: a slot and its holders/<ID> are created, deleted (and, under
// stale policy "expire", expired by their shared lease) together, and a new slot for <ID> is
// created only if holders/<ID> is as the deciding read saw it, with no slot of <ID> then.
//
// # Stale holders
//
// A group may have a lease TTL. With stale policy "expire", a new slot is attached to an etcd lease
// of that TTL that is never kept alive, so a host that dies or never comes back loses its slot
// when etcd's leader expires the lease. With the default policy "hold" no lease is used: a dead or
// rolled-back host keeps its slot so a bad rollout stops, and the TTL only marks the holder stale
// in status output. An operator breaks such a slot with ForceUnlock.
//
// # Waiting
//
// Store.Lock queues the host and watches the group: there is no polling. Free slots go to
// queued hosts first come, first served: PlanAcquire admits a host only while holders plus the
// hosts queued before it are under max (a caller that does not queue, such as TryLock from
// locksmithctl or a FleetLock request, comes after every queued host). A waiter follows the
// watch's events and re-reads only when the count says a slot may be its own, so a release
// wakes the next waiter rather than all of them. The queue is fairness, not safety: the slot
// transaction alone keeps the count under max.
package locksmith
