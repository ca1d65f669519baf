package omahatest

import (
	"bytes"
	"sync"
)

// SyncBuffer is a log sink that goroutines (a server's, an agent's) write while the test reads
// it: a bytes.Buffer behind a mutex. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
