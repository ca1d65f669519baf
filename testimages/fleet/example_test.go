package fleet_test

import (
	"context"
	"fmt"
	"os"

	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/testimages/fleet"
)

// A fleet of three hosts against an update server at 127.0.0.1:8080 (omahad) and an embedded
// etcd, run until every host committed 1.0.1. (Compiled, not run: it needs a server.)
func Example() {
	ctx, cancel := context.WithCancel(context.TODO())
	defer cancel()
	dir, _ := os.MkdirTemp("", "fleet")
	defer os.RemoveAll(dir)
	e, err := etcdtest.Start(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Stop()
	im, err := fleet.BuildImages(ctx, dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	f, err := fleet.New(ctx, fleet.Config{Hosts: 3, Dir: dir, Disk: im.Disk, Server: "http://127.0.0.1:8080/v1/update/", Etcd: e.Client})
	if err != nil {
		fmt.Println(err)
		return
	}
	go f.Run(ctx)
	st, err := f.Wait(ctx, func(s fleet.State) bool {
		for _, h := range s.Hosts {
			if h.Version != fleet.VersionGood || !h.Committed {
				return false
			}
		}
		return true
	})
	for _, h := range st.Hosts {
		fmt.Println(h.Name, h.History())
	}
}
