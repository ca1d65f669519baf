package server

import (
	"hash/maphash"
	"sync"
)

// keyLocks serialises work per key (a machine id) without making unrelated keys wait for
// each other: each key in use has its own mutex, created on first use and dropped when the
// last holder or waiter leaves. The table is split into shards to keep its own lock short.
type keyLocks struct {
	seed   maphash.Seed // set before first use
	shards [64]keyShard
}

type keyShard struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int // holders and waiters
}

// lock locks key and returns the function that unlocks it.
func (l *keyLocks) lock(key string) (unlock func()) {
	sh := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = map[string]*keyLock{}
	}
	k := sh.m[key]
	if k == nil {
		k = &keyLock{}
		sh.m[key] = k
	}
	k.refs++
	sh.mu.Unlock()
	k.mu.Lock()
	return func() {
		k.mu.Unlock()
		sh.mu.Lock()
		if k.refs--; k.refs == 0 {
			delete(sh.m, key)
		}
		sh.mu.Unlock()
	}
}
