package tailbuf

import (
	"bytes"
	"sync"
)

// Buffer keeps the last Max bytes written. The zero value keeps nothing; use New.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

// New returns a Buffer keeping the last max bytes.
func New(max int) *Buffer { return &Buffer{max: max} }

// Write keeps the end of p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	if over := b.buf.Len() + len(p) - b.max; over > 0 {
		b.buf.Next(over)
	}
	b.buf.Write(p)
	return n, nil
}

// Bytes is a copy of what is kept.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// String is what is kept, as a string.
func (b *Buffer) String() string { return string(b.Bytes()) }
