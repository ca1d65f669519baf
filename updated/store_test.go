package updated

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStoreRoundTrip(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	r, err := s.Load()
	if err != nil || !reflect.DeepEqual(r, NewRecord()) {
		t.Fatalf("Load of a new host = %+v, %v", r, err)
	}
	r, _ = run(t, r, updateEvents()...)
	r.BootID = "b"
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(s.Path()); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v; want mode 0600 (it is the host's private state)", st.Mode(), err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, r)
	}
}

func TestParseRecordRejects(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not json", "{", "decode"},
		{"no version", `{"state":"IDLE"}`, "no format version"},
		{"newer format", `{"version":99,"state":"IDLE"}`, "newer"},
		{"unknown state", `{"version":1,"state":"DANCING"}`, "unknown state"},
		{"downloading without attempt", `{"version":1,"state":"DOWNLOADING"}`, "without an attempt"},
		{"too large", `{"version":1,"state":"IDLE","x":"` + strings.Repeat("a", MaxStateFileSize) + `"}`, "larger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRecord([]byte(tc.in))
			if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseRecord = %v, want ErrCorruptState mentioning %q", err, tc.want)
			}
		})
	}
}

func TestStoreMoveAside(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := os.WriteFile(s.Path(), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorruptState) {
		t.Fatalf("Load = %v", err)
	}
	dst, err := s.MoveAside(t0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "garbage" {
		t.Fatalf("moved file: %q %v", b, err)
	}
	if filepath.Dir(dst) != s.Dir {
		t.Fatalf("moved out of the state dir: %s", dst)
	}
	if r, err := s.Load(); err != nil || r.State != Idle {
		t.Fatalf("Load after move = %v %v", r.State, err)
	}
}
