package dbusapitest_test

import (
	"testing"

	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbusapi/dbusapitest"
	"github.com/twinslot/twinslot/updated/dbustest"
)

// TestAgent drives the scripted agent the way locksmithd's tests do: a client reads the state
// and receives each change as the signal the real agent emits.
func TestAgent(t *testing.T) {
	bus := dbustest.New(t)
	agent := dbusapitest.Export(t, bus.Conn(t), dbusapitest.NeedReboot("2.0"), dbusapitest.Boot("steady", "1.0"))
	c := dbusapi.NewClient(bus.Conn(t))
	if st, err := c.GetStatus(t.Context()); err != nil || st != dbusapitest.NeedReboot("2.0") {
		t.Fatalf("GetStatus = %+v, %v", st, err)
	}
	sub, err := c.Subscribe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	agent.SetStatus(t, dbusapitest.Idle())
	if s, err := sub.Next(t.Context()); err != nil || s.Status == nil || *s.Status != dbusapitest.Idle() {
		t.Fatalf("signal after SetStatus = %+v, %v; want the idle status", s, err)
	}
	agent.SetBoot(t, dbusapitest.Boot("verifying", "2.0"))
	if s, err := sub.Next(t.Context()); err != nil || s.Boot == nil || *s.Boot != dbusapitest.Boot("verifying", "2.0") {
		t.Fatalf("signal after SetBoot = %+v, %v; want the verifying boot status", s, err)
	}
	if b, err := c.GetBootStatus(t.Context()); err != nil || b.State != "verifying" || b.BootedVersion != "2.0" {
		t.Fatalf("GetBootStatus = %+v, %v", b, err)
	}
	if err := c.AttemptUpdate(t.Context()); err != nil {
		t.Fatalf("AttemptUpdate = %v", err)
	}
}
