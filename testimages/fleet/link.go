package fleet

import (
	"context"
	"sync"

	"github.com/twinslot/twinslot/updated/dbusapi"
)

// link is the update agent as locksmithd sees it (daemon.Updated), without D-Bus: the agent's
// OnStatus and OnBootStatus hooks feed it, exactly what the agent would emit as StatusUpdate and
// BootStatus signals. One link serves one boot: a new boot gets a new agent and a new link, as
// a real boot gets a new bus.
type link struct {
	mu       sync.Mutex
	status   dbusapi.Status
	boot     dbusapi.BootStatus
	haveSt   bool
	haveBoot bool
	ready    chan struct{} // closed once both are known (the agent exported its API)
	subs     map[*sub]struct{}
}

// sub is one Subscribe: an unbounded queue of signals drained into ch in order.
type sub struct {
	ch   chan dbusapi.Signal
	q    []dbusapi.Signal
	wake chan struct{} // 1-buffered: the queue grew
}

func newLink() *link {
	return &link{ready: make(chan struct{}), subs: make(map[*sub]struct{})}
}

// onStatus is the agent's OnStatus hook.
func (l *link) onStatus(s dbusapi.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status, l.haveSt = s, true
	l.emitLocked(dbusapi.Signal{Status: &s})
}

// onBootStatus is the agent's OnBootStatus hook.
func (l *link) onBootStatus(b dbusapi.BootStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.boot, l.haveBoot = b, true
	l.emitLocked(dbusapi.Signal{Boot: &b})
}

func (l *link) emitLocked(sig dbusapi.Signal) {
	if l.haveSt && l.haveBoot {
		select {
		case <-l.ready:
		default:
			close(l.ready)
		}
	}
	for s := range l.subs {
		s.q = append(s.q, sig)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Subscribe delivers every signal emitted after it returns, in order; the channel is closed when
// ctx ends.
func (l *link) Subscribe(ctx context.Context) (<-chan dbusapi.Signal, error) {
	s := &sub{ch: make(chan dbusapi.Signal), wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.subs[s] = struct{}{}
	l.mu.Unlock()
	go func() {
		defer close(s.ch)
		defer func() {
			l.mu.Lock()
			delete(l.subs, s)
			l.mu.Unlock()
		}()
		for {
			l.mu.Lock()
			q := s.q
			s.q = nil
			l.mu.Unlock()
			for _, sig := range q {
				select {
				case s.ch <- sig:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return s.ch, nil
}

// wait blocks until the agent published its status (as a D-Bus call waits for the service).
func (l *link) wait(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// GetStatus is the Manager's GetStatus.
func (l *link) GetStatus(ctx context.Context) (dbusapi.Status, error) {
	if err := l.wait(ctx); err != nil {
		return dbusapi.Status{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status, nil
}

// GetBootStatus is Updated1's GetBootStatus.
func (l *link) GetBootStatus(ctx context.Context) (dbusapi.BootStatus, error) {
	if err := l.wait(ctx); err != nil {
		return dbusapi.BootStatus{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.boot, nil
}
