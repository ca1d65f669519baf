package locksmithd

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinslot/twinslot/locksmith"
	"github.com/twinslot/twinslot/locksmith/reboot"
	"github.com/twinslot/twinslot/locksmith/window"
)

// metricsTimeout bounds the etcd read of one scrape.
const metricsTimeout = 5 * time.Second

var (
	descUp      = prometheus.NewDesc("locksmith_etcd_up", "1 if the last scrape could read the semaphore from etcd.", []string{"group"}, nil)
	descMax     = prometheus.NewDesc("locksmith_slots_max", "Hosts of the group that may reboot at once.", []string{"group"}, nil)
	descHolders = prometheus.NewDesc("locksmith_holders", "Hosts holding a reboot slot.", []string{"group"}, nil)
	descQueue   = prometheus.NewDesc("locksmith_queue_length", "Hosts queued for a reboot slot.", []string{"group"}, nil)
	descAge     = prometheus.NewDesc("locksmith_holder_age_seconds", "How long each holder has held its slot.", []string{"group", "id", "state"}, nil)
	descStale   = prometheus.NewDesc("locksmith_holder_stale", "1 if the holder is older than the group's lease TTL or not seen for longer than --stale-after (flagged only: nothing frees it on its own).", []string{"group", "id"}, nil)
	descUnseen  = prometheus.NewDesc("locksmith_holder_unseen_seconds", "How long since each holder last wrote its slot (re-lock, reboot, boot).", []string{"group", "id"}, nil)
	descWindow  = prometheus.NewDesc("locksmith_window_open", "1 if a reboot window is open now.", nil, nil)
	descState   = prometheus.NewDesc("locksmith_state", "1 for the daemon's current state.", []string{"state"}, nil)
	descHolding = prometheus.NewDesc("locksmith_holding", "1 if this host holds a reboot slot.", nil, nil)
)

// collector reads the semaphore and the daemon at scrape time; store and d may be nil.
type collector struct {
	store   *locksmith.Store
	group   string
	windows window.Schedule
	// staleAfter flags holders not seen for longer (0: only the lease TTL).
	staleAfter time.Duration
	d          *reboot.Daemon
	ctx        context.Context
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descMax, descHolders, descQueue, descAge, descStale, descUnseen, descWindow, descState, descHolding} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descWindow, b2f(c.windows.Open(now)))
	if c.d != nil {
		st := c.d.Status()
		gauge(descState, 1, string(st.State))
		gauge(descHolding, b2f(st.Holding))
	}
	if c.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, metricsTimeout)
	defer cancel()
	st, err := c.store.State(ctx, c.group)
	gauge(descUp, b2f(err == nil), c.group)
	if err != nil {
		return
	}
	gauge(descMax, float64(st.Config.Max), c.group)
	gauge(descHolders, float64(len(st.Slots)), c.group)
	gauge(descQueue, float64(len(st.Queue)), c.group)
	for _, sl := range st.Slots {
		state := string(sl.Holder.State)
		if state == "" {
			state = "locked"
		}
		gauge(descAge, now.Sub(sl.Holder.AcquiredAt).Seconds(), c.group, sl.Holder.ID, state)
		gauge(descStale, b2f(st.Stale(sl, now) || st.Unseen(sl, now, c.staleAfter)), c.group, sl.Holder.ID)
		gauge(descUnseen, now.Sub(sl.LastSeen()).Seconds(), c.group, sl.Holder.ID)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsHandler serves /metrics from a registry of its own, plus the FleetLock request counter.
func metricsHandler(c *collector, fleetlockRequests *prometheus.CounterVec) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if fleetlockRequests != nil {
		reg.MustRegister(fleetlockRequests)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

func newFleetLockRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "locksmith_fleetlock_requests_total", Help: "FleetLock requests served, by HTTP status code.",
	}, []string{"code"})
}
