package server

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzCheckCrAU: the payload header check never panics, and accepts only files that start
// with "CrAU", major version 1 and a manifest size that fits.
func FuzzCheckCrAU(f *testing.F) {
	good := make([]byte, 64)
	copy(good, "CrAU")
	binary.BigEndian.PutUint64(good[4:], 1)
	binary.BigEndian.PutUint64(good[12:], 16)
	f.Add(good)
	f.Add(good[:19])
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	v2 := bytes.Clone(good)
	binary.BigEndian.PutUint64(v2[4:], 2)
	f.Add(v2)
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkCrAU(bytes.NewReader(b), int64(len(b)))
		ok := len(b) >= crauHeaderLen && string(b[:4]) == "CrAU" && binary.BigEndian.Uint64(b[4:12]) == 1 &&
			binary.BigEndian.Uint64(b[12:20]) > 0 && binary.BigEndian.Uint64(b[12:20]) <= uint64(len(b)-crauHeaderLen)
		if (err == nil) != ok {
			t.Fatalf("checkCrAU(%x…) = %v, want ok=%v", b[:min(len(b), 24)], err, ok)
		}
	})
}
