package dbusapi_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/dbustest"
)

type fakeBackend struct {
	mu       sync.Mutex
	status   dbusapi.Status
	boot     dbusapi.BootStatus
	attempts int
	resetErr error
}

func (f *fakeBackend) Status() dbusapi.Status { f.mu.Lock(); defer f.mu.Unlock(); return f.status }
func (f *fakeBackend) BootStatus() dbusapi.BootStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.boot
}
func (f *fakeBackend) AttemptUpdate() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	return nil
}
func (f *fakeBackend) ResetStatus() error { f.mu.Lock(); defer f.mu.Unlock(); return f.resetErr }

func (f *fakeBackend) set(fn func()) { f.mu.Lock(); defer f.mu.Unlock(); fn() }

func setup(t *testing.T) (*dbustest.Daemon, *fakeBackend, *dbusapi.Server, *dbusapi.Client) {
	bus := dbustest.New(t)
	b := &fakeBackend{
		status: dbusapi.Status{LastCheckedTime: 1700000000, Progress: 0.25, CurrentOperation: dbusapi.OpDownloading, NewVersion: "2.0.0", NewSize: 1 << 30},
		boot:   dbusapi.BootStatus{State: "committed", BootedVersion: "1.0.0", Slot: "USR-A"},
	}
	srv, err := dbusapi.Export(bus.Conn(t), b)
	if err != nil {
		t.Fatal(err)
	}
	return bus, b, srv, dbusapi.NewClient(bus.Conn(t))
}

func TestMethods(t *testing.T) {
	_, b, _, c := setup(t)
	ctx := t.Context()
	st, err := c.GetStatus(ctx)
	if err != nil || st != b.status {
		t.Fatalf("GetStatus = %+v, %v; want %+v", st, err, b.status)
	}
	bs, err := c.GetBootStatus(ctx)
	if err != nil || bs != b.boot {
		t.Fatalf("GetBootStatus = %+v, %v", bs, err)
	}
	if err := c.AttemptUpdate(ctx); err != nil {
		t.Fatalf("AttemptUpdate: %v", err)
	}
	b.set(func() {
		if b.attempts != 1 {
			t.Errorf("AttemptUpdate reached the backend %d times", b.attempts)
		}
	})
	if err := c.ResetStatus(ctx); err != nil {
		t.Fatalf("ResetStatus: %v", err)
	}
	b.set(func() {
		b.resetErr = fmt.Errorf("ResetStatus needs IDLE or UPDATED_NEED_REBOOT: %w", dbusapi.ErrNotAllowed)
	})
	if err := c.ResetStatus(ctx); !errors.Is(err, dbusapi.ErrNotAllowed) {
		t.Fatalf("ResetStatus while busy = %v, want ErrNotAllowed", err)
	}
}

// TestWireSignatures checks the exact D-Bus types update_engine uses, by calling with a raw
// connection rather than the typed client.
func TestWireSignatures(t *testing.T) {
	bus, _, srv, _ := setup(t)
	raw := bus.Conn(t)
	obj := raw.Object(dbusapi.BusName, dbusapi.ObjectPath)
	call := obj.Call(dbusapi.ManagerInterface+".GetStatus", 0)
	if call.Err != nil {
		t.Fatal(call.Err)
	}
	if sig := dbus.SignatureOf(call.Body...).String(); sig != "xdssx" {
		t.Fatalf("GetStatus reply signature %q, want xdssx", sig)
	}
	call = obj.Call(dbusapi.UpdatedInterface+".GetBootStatus", 0)
	if sig := dbus.SignatureOf(call.Body...).String(); call.Err != nil || sig != "ssss" {
		t.Fatalf("GetBootStatus reply signature %q (%v), want ssss", sig, call.Err)
	}

	if err := raw.AddMatchSignal(dbus.WithMatchObjectPath(dbusapi.ObjectPath)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 4)
	raw.Signal(ch)
	if err := srv.EmitStatus(dbusapi.Status{CurrentOperation: dbusapi.OpUpdatedNeedReboot, NewVersion: "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.EmitBootStatus(dbusapi.BootStatus{State: "verifying"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{dbusapi.SignalStatusUpdate: "xdssx", dbusapi.SignalBootStatus: "ssss"}
	for len(want) > 0 {
		select {
		case s := <-ch:
			if w, ok := want[s.Name]; ok {
				if got := dbus.SignatureOf(s.Body...).String(); got != w {
					t.Fatalf("%s signature %q, want %q", s.Name, got, w)
				}
				delete(want, s.Name)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("signals not received: %v", want)
		}
	}

	var xml string
	if err := obj.Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`name="StatusUpdate"`, `name="GetBootStatus"`, dbusapi.ManagerInterface} {
		if !strings.Contains(xml, s) {
			t.Errorf("introspection lacks %s", s)
		}
	}
}

func TestSubscribe(t *testing.T) {
	_, _, srv, c := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	sub, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ops := []string{dbusapi.OpCheckingForUpdate, dbusapi.OpDownloading, dbusapi.OpUpdatedNeedReboot}
	for _, op := range ops {
		if err := srv.EmitStatus(dbusapi.Status{CurrentOperation: op}); err != nil {
			t.Fatal(err)
		}
	}
	srv.EmitBootStatus(dbusapi.BootStatus{State: "rolled-back", PreviousVersion: "2.0.0"})
	var got []string
	for len(got) < 4 {
		s, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch {
		case s.Status != nil:
			got = append(got, s.Status.CurrentOperation)
		case s.Boot != nil:
			got = append(got, s.Boot.State+" "+s.Boot.PreviousVersion)
		}
	}
	if want := append(ops, "rolled-back 2.0.0"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("signals %v, want %v in order", got, want)
	}
}

func TestNameTaken(t *testing.T) {
	bus, _, _, _ := setup(t)
	if _, err := dbusapi.Export(bus.Conn(t), &fakeBackend{}); err == nil || !strings.Contains(err.Error(), "owned by another process") {
		t.Fatalf("second Export = %v, want a name-taken error", err)
	}
}

func TestNotRunning(t *testing.T) {
	bus := dbustest.New(t)
	c := dbusapi.NewClient(bus.Conn(t))
	if _, err := c.GetStatus(t.Context()); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("GetStatus without an agent = %v", err)
	}
}

func TestClose(t *testing.T) {
	bus, _, srv, c := setup(t)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetStatus(t.Context()); err == nil {
		t.Fatal("GetStatus after Close succeeded")
	}
	if _, err := dbusapi.Export(bus.Conn(t), &fakeBackend{}); err != nil {
		t.Fatalf("Export after Close: %v", err)
	}
}
