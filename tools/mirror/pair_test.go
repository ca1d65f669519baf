package mirror

import (
	"testing"
	"time"
)

// FuzzParsePair: whatever ParsePair accepts prints back to itself.
func FuzzParsePair(f *testing.F) {
	for _, s := range []string{
		"e96281a6-d1af-4bde-9a0a-97b76e56dc57/stable/amd64-usr",
		"{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}/beta/arm64-usr=stable",
		"x/y/z", "//", "a/b/c=", "e96281a6-d1af-4bde-9a0a-97b76e56dc57/st able/amd64-usr",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePair(s)
		if err != nil {
			return
		}
		q, err := ParsePair(p.String())
		if err != nil || q != p {
			t.Fatalf("ParsePair(%q) = %+v; reparsed %q = %+v, %v", s, p, p.String(), q, err)
		}
	})
}

// TestBackoff: each wait lies in the upper half of MinBackoff·2^(n-1), capped at MaxBackoff.
func TestBackoff(t *testing.T) {
	m := &Mirror{minB: time.Second, maxB: 10 * time.Second}
	for n, full := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		for range 50 {
			if d := m.backoff(n); d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, full/2, full)
			}
		}
	}
	for range 50 {
		if d := jitter(time.Hour, 0.1); d < 54*time.Minute || d > 66*time.Minute {
			t.Fatalf("jitter(1h, 10%%) = %s", d)
		}
	}
}
