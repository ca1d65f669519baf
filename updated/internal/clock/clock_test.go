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
