package server_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/omaha/store"
)

// ExampleNew runs a server on a SQLite file and asks it about an app it does not know.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "omahad")
	defer os.RemoveAll(dir)
	db, err := store.Open(ctx, filepath.Join(dir, "omahad.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	srv, err := server.New(ctx, server.Config{DB: db, StoreDir: filepath.Join(dir, "payloads")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close(ctx)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	req := `<request protocol="3.0"><app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="1.0.0" track="stable"
		machineid="639c3d1041b94d7c915c18174eeeb154"><ping active="1"></ping><updatecheck></updatecheck></app></request>`
	resp, err := hs.Client().Post(hs.URL+"/v1/update/", "text/xml", strings.NewReader(req))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	r, err := omaha.ParseResponse(resp.Body)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, r.Apps[0].Status)
	// Output: 200 error-unknownApplication
}

func ExampleCompareVersions() {
	fmt.Println(server.CompareVersions("4081.2.0", "4152.2.0"), server.CompareVersions("1.0.0", "1.0.0-rc.1"))
	// Output: -1 1
}
