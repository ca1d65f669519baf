package admin_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// ExampleClient creates a group with a rollout policy through the admin API.
func ExampleClient() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "admin")
	defer os.RemoveAll(dir)
	db, _ := store.Open(ctx, filepath.Join(dir, "omahad.db"))
	defer db.Close()
	db.CreateApp(ctx, store.App{ID: "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc", Name: "twinslot", Trust: []byte(`{"version":1}`)}, time.Now())
	token, _, _ := db.CreateToken(ctx, store.RoleAdmin, "example", time.Now()) // omahad token create --role admin
	srv, _ := server.New(ctx, server.Config{DB: db, StoreDir: filepath.Join(dir, "payloads")})
	defer srv.Close(ctx)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	c, err := admin.NewClient(hs.URL, token, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	g, err := c.CreateGroup(ctx, "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc", admin.Group{
		Name: "canary", Channel: "beta",
		Policy: admin.Policy{Enabled: true, MaxUpdates: 10, Period: admin.Duration(time.Hour), UpdateTimeout: admin.Duration(30 * time.Minute)},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(g.Name, g.Channel, g.Policy.MaxUpdates, time.Duration(g.Policy.Period))
	_, err = c.Group(ctx, "f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc", "nightly")
	fmt.Println(err)
	// Output:
	// canary beta 10 1h0m0s
	// server answered 404: group "nightly" of app f7d0ccdd-af0a-402c-b7d1-0693b2cf46bc: not found
}
