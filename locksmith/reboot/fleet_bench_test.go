package reboot_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/etcdtest"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/updated/dbusapi"
	"github.com/twinslot/twinslot/updated/updateconf"
)

// simAgent is a simulated update agent: an in-memory reboot.Updated.
type simAgent struct {
	mu     sync.Mutex
	status dbusapi.Status
	boot   dbusapi.BootStatus
}

func (a *simAgent) Subscribe(ctx context.Context) (<-chan dbusapi.Signal, error) {
	ch := make(chan dbusapi.Signal)
	go func() { <-ctx.Done(); close(ch) }() // the simulated agent never changes while a daemon runs
	return ch, nil
}

func (a *simAgent) GetStatus(context.Context) (dbusapi.Status, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status, nil
}

func (a *simAgent) GetBootStatus(context.Context) (dbusapi.BootStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.boot, nil
}

// simBoot is the reboot action of a simulated host: it only tells the host to go down.
type simBoot struct{ down chan struct{} }

func (simBoot) BlockingInhibitors(context.Context) ([]string, error) { return nil, nil }
func (b simBoot) Reboot(context.Context) error {
	select {
	case b.down <- struct{}{}:
	default:
	}
	return nil
}

// simHost runs one host through an update: locksmithd in the old boot until it reboots, the
// reboot (down for rebootTime, then the boot loader starts the new version, which updated
// commits), and locksmithd in the new boot until it released its slot.
func simHost(ctx context.Context, id string, store *locksmith.Store, rebootTime time.Duration, down *downCount) error {
	agent := &simAgent{
		status: dbusapi.Status{CurrentOperation: dbusapi.OpUpdatedNeedReboot, NewVersion: "2.0", Progress: 1},
		boot:   dbusapi.BootStatus{State: reboot.BootSteady, BootedVersion: "1.0", Slot: "USR-A"},
	}
	run := func(bootID string, until func(*reboot.Daemon, <-chan struct{}) bool) error {
		down := make(chan struct{}, 1)
		d, err := reboot.New(reboot.Config{Strategy: updateconf.StrategyEtcdLock, Group: "fleet", MachineID: id, BootID: bootID},
			reboot.Deps{Updated: agent, Rebooter: simBoot{down}, Store: store, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		dctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(dctx) }()
		ok := until(d, down)
		stop()
		if err := <-done; err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: stopped in %s: %+v", id, bootID, d.Status())
		}
		return nil
	}
	// Old boot: run until the daemon asks to reboot (the host goes down: the daemon is killed).
	if err := run("boot-1", func(_ *reboot.Daemon, down <-chan struct{}) bool {
		select {
		case <-down:
			return true
		case <-ctx.Done():
			return false
		}
	}); err != nil {
		return err
	}
	down.add(1)
	select {
	case <-time.After(rebootTime):
	case <-ctx.Done():
		return ctx.Err()
	}
	down.add(-1)
	agent.mu.Lock()
	agent.status = dbusapi.Status{CurrentOperation: dbusapi.OpIdle}
	agent.boot = dbusapi.BootStatus{State: reboot.BootCommitted, BootedVersion: "2.0", PreviousVersion: "1.0", Slot: "USR-B"}
	agent.mu.Unlock()
	// New boot: run until the daemon released the slot (idle).
	return run("boot-2", func(d *reboot.Daemon, _ <-chan struct{}) bool {
		for {
			ch := d.Changed()
			if d.Status().State == reboot.StateIdle {
				return true
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return false
			}
		}
	})
}

// downCount tracks how many simulated hosts are down at once.
type downCount struct {
	mu        sync.Mutex
	now, peak int
}

func (c *downCount) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now += n
	c.peak = max(c.peak, c.now)
}

// BenchmarkFleetReboot runs 50 simulated hosts through a reboot with max 5 in one group and
// reports the time until all rebooted and released, beside the ideal ceil(50/5) reboot times.
func BenchmarkFleetReboot(b *testing.B) {
	const (
		hosts      = 50
		maxReboot  = 5
		rebootTime = 300 * time.Millisecond
	)
	e := etcdtest.New(b)
	stores := make([]*locksmith.Store, 5)
	for i := range stores {
		stores[i] = locksmith.NewStore(e.NewClient(b), "", nil)
	}
	ideal := time.Duration((hosts+maxReboot-1)/maxReboot) * rebootTime
	var total time.Duration
	var peak int
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
		if _, err := stores[0].SetMax(ctx, "fleet", maxReboot); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var down downCount
		var wg sync.WaitGroup
		errs := make(chan error, hosts)
		for i := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := simHost(ctx, fmt.Sprintf("host-%02d", i), stores[i%len(stores)], rebootTime, &down); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
		cancel()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		if down.peak > maxReboot || down.peak == 0 {
			b.Fatalf("%d hosts were down at once, max %d", down.peak, maxReboot)
		}
		peak = down.peak
		if st, err := stores[0].State(b.Context(), "fleet"); err != nil || len(st.Slots) != 0 {
			b.Fatalf("slots left: %+v %v", st.Slots, err)
		}
	}
	avg := total / time.Duration(b.N)
	b.ReportMetric(avg.Seconds(), "fleet-s")
	b.ReportMetric(ideal.Seconds(), "ideal-s")
	b.ReportMetric(100*(avg-ideal).Seconds()/ideal.Seconds(), "overhead-%")
	b.ReportMetric(float64(peak), "peak-down")
}
