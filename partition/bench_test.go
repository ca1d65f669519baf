package partition

import (
	"testing"
)

// BenchmarkFlip measures one attribute update (PrepareInstall) on an image file: a fresh
// read and check of both GPT copies, then four writes each followed by fsync.
func BenchmarkFlip(b *testing.B) {
	d := openT(b, freshImage(b))
	s, err := d.SlotByLabel("USR-B")
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		var err error
		if i%2 == 0 {
			err = d.PrepareInstall(s)
		} else {
			err = d.BeginInstall(s)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSlots measures reading and checking the table (no write).
func BenchmarkSlots(b *testing.B) {
	d := openT(b, freshImage(b), ReadOnly())
	for b.Loop() {
		if _, err := d.Slots(); err != nil {
			b.Fatal(err)
		}
	}
}
