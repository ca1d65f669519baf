package mirror_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/tools/mirror"
)

func ExampleParsePair() {
	p, err := mirror.ParsePair("{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}/stable/amd64-usr=beta")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.App, p.Channel, p.Board, p.Local)
	// Output: e96281a6-d1af-4bde-9a0a-97b76e56dc57 stable amd64-usr beta
}

// Follow Flatcar's public stable channel into the local omahad's stable channel, hourly.
func ExampleMirror_Run() {
	ctx := context.Background()
	cl, err := admin.NewClient("http://127.0.0.1:8080", "admin-token", nil)
	if err != nil {
		log.Fatal(err)
	}
	pair, err := mirror.ParsePair("e96281a6-d1af-4bde-9a0a-97b76e56dc57/stable/amd64-usr")
	if err != nil {
		log.Fatal(err)
	}
	m, err := mirror.New(mirror.Config{
		Upstream: "https://public.update.flatcar-linux.net/v1/update/",
		Pairs:    []mirror.Pair{pair},
		Dir:      "/var/lib/twinslot/mirror",
		Local:    mirror.AdminLocal{Client: cl},
		Interval: time.Hour,
		Report:   func(ev mirror.Event) { log.Print(ev.Message) },
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Print(m.Run(ctx))
}
