package server

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twinslot/twinslot/payload"
)

// TestUploadLeftovers: the temporary file of an upload is gone when the client is killed
// mid-upload, and what a killed server left behind is removed when the next one starts.
func TestUploadLeftovers(t *testing.T) {
	addr, s := serveLimited(t, defaultLimits(), 0)
	tmpDir := filepath.Join(s.storeDir, "tmp")
	ctx := t.Context()
	token := adminApp(t, s)

	t.Run("client killed", func(t *testing.T) {
		c := dial(t, addr)
		fmt.Fprintf(c, "POST /api/v1/apps/%s/packages HTTP/1.1\r\nHost: omahad\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n", payload.DefaultAppID, token)
		c.Write(make([]byte, 4096))
		deadline := time.Now().Add(bound)
		for started := false; ; time.Sleep(5 * time.Millisecond) {
			ents, _ := os.ReadDir(tmpDir)
			if !started && len(ents) > 0 {
				started = true
				c.Close() // the upload's file exists: kill the client
			}
			if started && len(ents) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v: upload started %v, tmp/ holds %d files", bound, started, len(ents))
			}
		}
	})

	t.Run("server killed", func(t *testing.T) {
		dir := t.TempDir()
		tmp := filepath.Join(dir, "tmp")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"upload-123", "upload-456", "README"} {
			if err := os.WriteFile(filepath.Join(tmp, n), []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s2, err := New(ctx, Config{DB: s.db, StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close(ctx)
		ents, _ := os.ReadDir(tmp)
		if len(ents) != 1 || ents[0].Name() != "README" {
			t.Fatalf("tmp/ after start: %v (want only README, which is no upload's)", ents)
		}
	})
}
