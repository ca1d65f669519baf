package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/twinslot/twinslot/updated/dbusapi"
)

// The in-process agent link behaves like the D-Bus one locksmithd expects: reads wait for the
// agent to be up, every signal after Subscribe arrives in order, and the channel closes with ctx.
func TestLink(t *testing.T) {
	l := newLink()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	early, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := l.GetStatus(early); err == nil {
		t.Fatal("GetStatus answered before the agent published anything")
	}
	stop()
	sctx, unsubscribe := context.WithCancel(ctx)
	ch, err := l.Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := []string{dbusapi.OpIdle, dbusapi.OpCheckingForUpdate, dbusapi.OpDownloading, dbusapi.OpFinalizing, dbusapi.OpUpdatedNeedReboot}
	l.onBootStatus(dbusapi.BootStatus{State: "steady", BootedVersion: "1.0.0", Slot: "USR-A"})
	for _, op := range ops {
		l.onStatus(dbusapi.Status{CurrentOperation: op})
	}
	if st, err := l.GetStatus(ctx); err != nil || st.CurrentOperation != dbusapi.OpUpdatedNeedReboot {
		t.Fatalf("GetStatus = %+v, %v", st, err)
	}
	if b, err := l.GetBootStatus(ctx); err != nil || b.BootedVersion != "1.0.0" {
		t.Fatalf("GetBootStatus = %+v, %v", b, err)
	}
	if sig := <-ch; sig.Boot == nil || sig.Boot.State != "steady" {
		t.Fatalf("first signal %+v, want the boot status", sig)
	}
	for _, op := range ops {
		if sig := <-ch; sig.Status == nil || sig.Status.CurrentOperation != op {
			t.Fatalf("signal %+v, want %s", sig, op)
		}
	}
	unsubscribe()
	for range ch {
	}
	l.onStatus(dbusapi.Status{CurrentOperation: dbusapi.OpIdle}) // no subscriber left: must not block
}

func TestNewRefuses(t *testing.T) {
	ok := Config{Hosts: 1, Dir: t.TempDir(), Disk: "disk.img", Server: "http://127.0.0.1:1/v1/update/"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no hosts", func(c *Config) { c.Hosts = 0 }},
		{"no disk", func(c *Config) { c.Disk = "" }},
		{"no server", func(c *Config) { c.Server = "" }},
		{"no etcd", func(*Config) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			if _, err := New(t.Context(), c); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}
