package tailbuf

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestKeepsTheEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"nothing kept", 0, []string{"abc"}, ""},
		{"under the limit", 8, []string{"ab", "cd"}, "abcd"},
		{"exactly the limit", 4, []string{"ab", "cd"}, "abcd"},
		{"older bytes dropped", 4, []string{"abc", "def"}, "cdef"},
		{"one write larger than the limit", 3, []string{"x", "abcdefg"}, "efg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.max)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Fatalf("kept %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConcurrentWriters(t *testing.T) {
	b := New(1000)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("0123456789"))
			}
		})
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("0123456789", 100) {
		t.Fatalf("after 4000 bytes of whole 10-byte writes the last 1000 bytes are not whole writes: %q", got)
	}
}

func Example() {
	console := New(7)
	console.Write([]byte("OVMF ... GRUB ... "))
	console.Write([]byte("ok\n"))
	fmt.Printf("%q\n", console.String())
	// Output: "... ok\n"
}
