package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/omaha/store"
)

// ExampleOpen opens a SQLite store, creates an app and lists its channels and default groups.
func ExampleOpen() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "store")
	defer os.RemoveAll(dir)
	db, err := store.Open(ctx, filepath.Join(dir, "omahad.db")) // or "postgres://…"
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	if err := db.CreateApp(ctx, store.App{ID: "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc", Name: "twinslot", Trust: []byte(`{"version":1}`)}, now); err != nil {
		fmt.Println(err)
		return
	}
	chs, _ := db.Channels(ctx, "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc")
	gs, _ := db.Groups(ctx, "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc")
	for i := range chs {
		fmt.Println(chs[i].Name, gs[i].Name, gs[i].Policy.Enabled)
	}
	// Output:
	// alpha alpha true
	// beta beta true
	// stable stable true
}
