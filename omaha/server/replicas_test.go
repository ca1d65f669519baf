package server_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/twinslot/twinslot/omaha"
	"github.com/twinslot/twinslot/omaha/admin"
	"github.com/twinslot/twinslot/omaha/omahatest"
	"github.com/twinslot/twinslot/omaha/server"
	"github.com/twinslot/twinslot/payload"
	"github.com/twinslot/twinslot/payload/payloadtest"
)

// TestReplicasPostgres runs two servers on one PostgreSQL database: a change made through one
// reaches the other's catalog by polling, and a group's cap holds across both.
func TestReplicasPostgres(t *testing.T) {
	dsn := omahatest.PostgresDSN(t)
	poll := omahatest.WithConfig(func(c *server.Config) { c.CachePoll = 10 * time.Millisecond })
	a := omahatest.New(t, omahatest.WithDSN(dsn), poll)
	b := omahatest.New(t, omahatest.WithDSN(dsn), poll) // started before the app exists
	key := payloadtest.NewKey(t, "")
	a.CreateApp(t, payload.DefaultAppID, payloadtest.TrustRoot(t, 1, 0, key))
	b.App = a.App
	a.Publish(t, "stable", a.BuildPayload(t, "1.1.0", key))
	a.CreateGroup(t, "one", "stable", admin.Policy{Enabled: true, MaxUpdates: 1, Period: admin.Duration(time.Hour)})

	// B learns about the app, the package and the group by polling the catalog version.
	body, err := omahatest.Request(&omaha.App{AppID: omaha.FormatAppID(a.App), Version: "1.0.0", Track: "one",
		MachineID: omahatest.NewMachineID(), Board: "amd64-usr", UpdateCheck: &omaha.UpdateCheck{}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var offer bool
	for i := 0; i < 500 && !offer; i++ {
		_, out := b.Post(t, body)
		offer = bytes.Contains(out, []byte(`<updatecheck status="ok"`))
		time.Sleep(10 * time.Millisecond)
	}
	if !offer {
		t.Fatal("replica B never offered the update published through A")
	}
	// That host took the only slot of group "one", through B; A refuses another host.
	if u := a.Host(t, "one", "1.0.0").Check(t); u != nil {
		t.Fatal("A granted a second slot of a max-1 group")
	}
}
