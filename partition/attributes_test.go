package partition

import "testing"

func TestAttributesEncoding(t *testing.T) {
	for _, tc := range []struct {
		name       string
		a          Attributes
		prio, trie int
		ok         bool
		bootable   bool
	}{
		{name: "zero", a: 0},
		{name: "fresh USR-A P1 S1", a: 0x0101000000000000, prio: 1, ok: true, bootable: true},
		{name: "installed P2 T1", a: 0x0012000000000000, prio: 2, trie: 1, bootable: true},
		{name: "blessed P2 S1", a: 0x0102000000000000, prio: 2, ok: true, bootable: true},
		{name: "tried out P2 T0 S0", a: 0x0002000000000000, prio: 2},
		{name: "priority 0 never bootable", a: 0x01F0000000000000, trie: 15, ok: true},
		{name: "all gptprio bits", a: 0x01FF000000000000, prio: 15, trie: 15, ok: true, bootable: true},
		{name: "other bits only", a: 0xFE00FFFFFFFFFFFF},
		{name: "other bits with P3 T2", a: 0xFE23FFFFFFFFFFFF, prio: 3, trie: 2, bootable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Priority(); got != tc.prio {
				t.Errorf("Priority = %d, want %d", got, tc.prio)
			}
			if got := tc.a.Tries(); got != tc.trie {
				t.Errorf("Tries = %d, want %d", got, tc.trie)
			}
			if got := tc.a.Successful(); got != tc.ok {
				t.Errorf("Successful = %v, want %v", got, tc.ok)
			}
			if got := tc.a.Bootable(); got != tc.bootable {
				t.Errorf("Bootable = %v, want %v", got, tc.bootable)
			}
			// Rebuilding from the decoded fields over the other bits gives the same word.
			other := tc.a &^ gptprioMask
			if got := other.WithPriority(tc.prio).WithTries(tc.trie).WithSuccessful(tc.ok); got != tc.a {
				t.Errorf("re-encoded %#016x, want %#016x", uint64(got), uint64(tc.a))
			}
		})
	}
}

func TestAttributesWithPreservesOtherBits(t *testing.T) {
	for _, other := range []Attributes{0, 1, 1 << 2, 1 << 60, 1 << 63, 0xFE00FFFFFFFFFFFF, 0x0E00000000000007} {
		for p := 0; p <= MaxPriority; p++ {
			for n := 0; n <= MaxTries; n++ {
				for _, ok := range []bool{false, true} {
					a := other.WithPriority(p).WithTries(n).WithSuccessful(ok)
					if a&^gptprioMask != other {
						t.Fatalf("other bits %#x became %#x", uint64(other), uint64(a&^gptprioMask))
					}
					if a.Priority() != p || a.Tries() != n || a.Successful() != ok {
						t.Fatalf("%v: set P=%d T=%d S=%v", a, p, n, ok)
					}
					// Changing one field leaves the others.
					b := a.WithPriority(15 - p)
					if b.Tries() != n || b.Successful() != ok || b&^gptprioMask != other {
						t.Fatalf("WithPriority changed other fields: %v -> %v", a, b)
					}
				}
			}
		}
	}
}

func TestAttributesClamp(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Attributes
		want Attributes
	}{
		{"priority negative", Attributes(0).WithPriority(-3), 0},
		{"priority too big", Attributes(0).WithPriority(99), 0x000F000000000000},
		{"tries negative", Attributes(0).WithTries(-1), 0},
		{"tries too big", Attributes(0).WithTries(16), 0x00F0000000000000},
		{"clear successful", Attributes(0x0101000000000000).WithSuccessful(false), 0x0001000000000000},
	} {
		if tc.a != tc.want {
			t.Errorf("%s: %#016x, want %#016x", tc.name, uint64(tc.a), uint64(tc.want))
		}
	}
}

func TestAttributesString(t *testing.T) {
	for a, want := range map[Attributes]string{
		0x0012000000000000: "P=2 T=1 S=0",
		0x1101000000000001: "P=1 T=0 S=1 other=0x1000000000000001",
	} {
		if got := a.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint64(a), got, want)
		}
	}
}
