package payload

import "sync"

// bgSyncEvery is how many bytes an install writes between two syncs of the target while it
// goes on (a variable for tests).
var bgSyncEvery int64 = 64 << 20

// bgSync syncs the target in the background every bgSyncEvery bytes written, so that the device
// makes the data durable while the install still fetches and decodes, and the final sync has
// only the last bytes left: on a disk slower to make writes durable than the install is to
// decode them, the final sync had been 20–25% of a 256 MiB install (BenchmarkApply). Its first
// error is kept for the final sync, because an fsync error is reported to one caller only.
type bgSync struct {
	sync    func() error
	kick    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	stopped bool  // kick is closed
	err     error // the first failed sync's
}

func startBgSync(sync func() error) *bgSync {
	s := &bgSync{sync: sync, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for range s.kick {
			if err := s.sync(); err != nil {
				s.mu.Lock()
				if s.err == nil {
					s.err = err
				}
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// wrote notes that the install's written bytes went from before to after. After stop it does
// nothing.
func (s *bgSync) wrote(before, after int64) {
	if s == nil || before/bgSyncEvery == after/bgSyncEvery {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default: // a sync is due already
	}
}

// finish stops the background syncs and syncs once more, after the install's last write; it
// returns the first error of any sync.
func (s *bgSync) finish() error {
	if s == nil {
		return nil
	}
	if err := s.stop(); err != nil {
		return err
	}
	return s.sync()
}

// stop waits for the sync under way and returns the first error of any; it may be called again.
func (s *bgSync) stop() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.kick)
	}
	s.mu.Unlock()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
