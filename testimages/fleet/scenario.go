package fleet

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/twinslot/twinslot/testimages"
)

// The versions of the rollout scenario that the end-to-end test and the demo play: every host
// starts on Base, Good is a healthy new build, Broken a build whose health gate fails.
const (
	VersionBase   = "1.0.0"
	VersionGood   = "1.0.1"
	VersionBroken = "1.0.2"
	// Change is the fraction of files each new build changes.
	Change = 0.05
)

// Images are the scenario's builds.
type Images struct {
	Disk   string // a disk (testimages.MinDiskSize) with VersionBase in USR-A, to copy per host
	Good   string // the /usr image of VersionGood, built from VersionBase's
	Broken string // the /usr image of VersionBroken, built from VersionGood's, carrying the broken marker
}

// BuildImages builds the scenario's images into dir; step, when set, is told what is being
// built.
func BuildImages(ctx context.Context, dir string, step func(string)) (Images, error) {
	if step == nil {
		step = func(string) {}
	}
	base := filepath.Join(dir, "usr-"+VersionBase+".img")
	im := Images{
		Disk:   filepath.Join(dir, "disk-"+VersionBase+".img"),
		Good:   filepath.Join(dir, "usr-"+VersionGood+".img"),
		Broken: filepath.Join(dir, "usr-"+VersionBroken+"-broken.img"),
	}
	size := testimages.SlotSize(testimages.MinDiskSize)
	for _, b := range []struct {
		what string
		run  func() error
	}{
		{"the " + VersionBase + " /usr image", func() error {
			return testimages.BuildUsr(ctx, base, testimages.UsrOptions{Version: VersionBase, Size: size})
		}},
		{"the " + VersionBase + " disk (USR-A " + VersionBase + ", USR-B empty)", func() error {
			return testimages.BuildDisk(ctx, im.Disk, testimages.DiskOptions{Usr: base, Size: testimages.MinDiskSize})
		}},
		{fmt.Sprintf("the %s /usr image (%.0f%% of %s's files changed)", VersionGood, Change*100, VersionBase), func() error {
			return testimages.BuildUsr(ctx, im.Good, testimages.UsrOptions{Version: VersionGood, Base: base, Change: Change})
		}},
		{fmt.Sprintf("the %s /usr image, BROKEN (its health check fails)", VersionBroken), func() error {
			return testimages.BuildUsr(ctx, im.Broken, testimages.UsrOptions{Version: VersionBroken, Base: im.Good, Change: Change, Broken: true})
		}},
	} {
		step(b.what)
		if err := b.run(); err != nil {
			return Images{}, fmt.Errorf("fleet: build %s: %w", b.what, err)
		}
	}
	return im, nil
}

// Clock is a clock that can jump ahead: the update server's clock in a simulation that
// compresses hours of rollout policy (a rate of one update per hour) into seconds. It is safe
// for concurrent use; the zero value is the real time.
type Clock struct{ offset atomic.Int64 }

// Now is the real time plus every Advance so far.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock d ahead.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
