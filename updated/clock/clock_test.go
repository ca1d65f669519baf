package clock

import (
	"reflect"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	f := NewFake(time.Unix(1000, 0))
	a := f.After(10 * time.Second)
	b := f.After(5 * time.Second)
	if now := <-f.After(0); !now.Equal(time.Unix(1000, 0)) {
		t.Fatalf("After(0) = %v", now)
	}
	if got := f.Pending(); !reflect.DeepEqual(got, []time.Duration{5 * time.Second, 10 * time.Second}) {
		t.Fatalf("Pending = %v", got)
	}
	f.Advance(4 * time.Second)
	select {
	case <-b:
		t.Fatal("fired early")
	default:
	}
	if d := f.AdvanceToNext(); d != time.Second {
		t.Fatalf("AdvanceToNext moved %v", d)
	}
	if at := <-b; !at.Equal(time.Unix(1005, 0)) {
		t.Fatalf("b fired at %v", at)
	}
	if ws, err := f.WaitFor(t.Context(), 1); err != nil || len(ws) != 1 {
		t.Fatalf("WaitFor = %v, %v", ws, err)
	}
	f.Advance(time.Hour)
	<-a
	if len(f.Pending()) != 0 || f.AdvanceToNext() != 0 {
		t.Fatal("waiters left")
	}
}

func TestFakeSet(t *testing.T) {
	start := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	f := NewFake(start)
	late := f.After(2 * time.Hour)
	early := f.After(time.Hour)
	f.Set(start.Add(90 * time.Minute))
	select {
	case at := <-early:
		if !at.Equal(start.Add(90 * time.Minute)) {
			t.Fatalf("early fired with %v, want the time Set moved to", at)
		}
	default:
		t.Fatal("a waiter due before the new time did not fire")
	}
	select {
	case <-late:
		t.Fatal("a waiter due after the new time fired")
	default:
	}
	if got := f.Pending(); !reflect.DeepEqual(got, []time.Duration{2 * time.Hour}) {
		t.Fatalf("Pending = %v", got)
	}
	if now := f.Now(); !now.Equal(start.Add(90 * time.Minute)) {
		t.Fatalf("Now = %v", now)
	}
}
