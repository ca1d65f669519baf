package store_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

// TestSQLiteFileModes: the database and its -wal and -shm files hold token hashes and the
// fleet's inventory: readable by their owner only, also when an older version left them 0644.
func TestSQLiteFileModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  os.FileMode // mode of a database file left by an earlier run; 0: none
	}{
		{name: "left world-readable", old: 0o644},
		{name: "new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "omahad.db")
			if tc.old != 0 {
				for _, p := range []string{path, path + "-wal", path + "-shm"} {
					if err := os.WriteFile(p, nil, tc.old); err != nil {
						t.Fatal(err)
					}
					if err := os.Chmod(p, tc.old); err != nil { // past the umask
						t.Fatal(err)
					}
				}
			}
			db, err := store.Open(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, _, err := db.CreateToken(t.Context(), store.RoleAdmin, "t", time.Now()); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				st, err := os.Stat(p)
				if err != nil {
					t.Fatalf("%s: %v", filepath.Base(p), err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
				}
			}
		})
	}
}
