package partition

import "fmt"

// TypeUSR is the GPT partition type GUID of a CoreOS/Flatcar /usr slot ("flatcar-usr" in cgpt).
const TypeUSR = "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6"

// Bit positions and widths of the gptprio fields in the 64-bit GPT attribute word
// (ChromeOS cgpt layout, used by Flatcar's GRUB gptprio.next).
const (
	PriorityShift  = 48 // bits 48–51
	TriesShift     = 52 // bits 52–55
	SuccessfulBit  = 56 // bit 56
	MaxPriority    = 15
	MaxTries       = 15
	fieldMask      = 0xF
	gptprioMask    = Attributes(fieldMask)<<PriorityShift | Attributes(fieldMask)<<TriesShift | 1<<SuccessfulBit
	successfulMask = Attributes(1) << SuccessfulBit
)

// Attributes is the full 64-bit attribute field of a GPT partition entry. The With* methods
// change one gptprio field and leave every other bit exactly as it was.
type Attributes uint64

// Priority is the boot priority, 0–15; 0 means the slot is never chosen.
func (a Attributes) Priority() int { return int(a >> PriorityShift & fieldMask) }

// Tries is the number of boot attempts left, 0–15.
func (a Attributes) Tries() int { return int(a >> TriesShift & fieldMask) }

// Successful reports whether the slot has booted and been marked good.
func (a Attributes) Successful() bool { return a&successfulMask != 0 }

// Bootable reports whether gptprio.next may choose the slot: priority > 0 and either tries left
// or marked successful.
func (a Attributes) Bootable() bool {
	return a.Priority() > 0 && (a.Tries() > 0 || a.Successful())
}

// WithPriority returns a with the priority set to p, clamped to 0–15.
func (a Attributes) WithPriority(p int) Attributes {
	return a&^(fieldMask<<PriorityShift) | Attributes(clamp(p, MaxPriority))<<PriorityShift
}

// WithTries returns a with the tries counter set to n, clamped to 0–15.
func (a Attributes) WithTries(n int) Attributes {
	return a&^(fieldMask<<TriesShift) | Attributes(clamp(n, MaxTries))<<TriesShift
}

// WithSuccessful returns a with the successful bit set or cleared.
func (a Attributes) WithSuccessful(ok bool) Attributes {
	if ok {
		return a | successfulMask
	}
	return a &^ successfulMask
}

// String shows the gptprio fields and, when set, the other bits: "P=2 T=1 S=0".
func (a Attributes) String() string {
	s := fmt.Sprintf("P=%d T=%d S=%d", a.Priority(), a.Tries(), b2i(a.Successful()))
	if other := a &^ gptprioMask; other != 0 {
		s += fmt.Sprintf(" other=%#016x", uint64(other))
	}
	return s
}

func clamp(v, max int) int {
	switch {
	case v < 0:
		return 0
	case v > max:
		return max
	}
	return v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
