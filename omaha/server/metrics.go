package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twinslot/twinslot/omaha"
)

// metrics are omahad's Prometheus metrics, on a registry of their own.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	checks      *prometheus.CounterVec
	granted     prometheus.Counter
	events      *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	dbSeconds   *prometheus.HistogramVec
	batchRows   prometheus.Histogram
	queue       prometheus.Gauge
	flushErrors prometheus.Counter
	halts       prometheus.Counter
	promotions  *prometheus.CounterVec
	wave        *prometheus.GaugeVec
	waveShare   *prometheus.GaugeVec
	waveOpened  prometheus.Counter
	enrollments *prometheus.CounterVec
	untrusted   *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "omahad_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"route"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_update_checks_total", Help: "Update checks by answer (ok, noupdate, error-…) and reason.",
		}, []string{"status", "reason"}),
		granted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omahad_updates_granted_total", Help: "Updates granted (new slots of a group's policy).",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_events_total", Help: "Events reported by hosts, by type and result (unknown pairs as other).",
		}, []string{"type", "result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_update_requests_rejected_total", Help: "Omaha requests refused before any processing, by reason.",
		}, []string{"reason"}),
		dbSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "omahad_db_seconds", Help: "Database operation latency by operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 2},
		}, []string{"op"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "omahad_checkin_batch_rows", Help: "Rows (instances + events) per check-in write transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omahad_checkin_queue_rows", Help: "Check-in rows waiting to be written.",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omahad_checkin_write_errors_total", Help: "Failed check-in write transactions (rows are kept and retried).",
		}),
		halts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omahad_groups_halted_total", Help: "Groups paused automatically by their halt_on_failures policy.",
		}),
		promotions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_promotions_total", Help: "Promotion requests by channel promoted into and result: promoted (gate passed or none), refused (gate failed), forced (gate failed, overridden with a reason).",
		}, []string{"channel", "result"}),
		wave: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "omahad_wave", Help: "Index (0-based) of the open wave of a group's rollout of its channel's newest version, for groups with waves.",
		}, []string{"app", "group"}),
		waveShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "omahad_wave_hosts_share", Help: "Share (0..1) of a group's hosts its open wave offers the channel's newest version to.",
		}, []string{"app", "group"}),
		waveOpened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "omahad_waves_opened_total", Help: "Waves opened by the server (a version's first wave included).",
		}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_enrollments_total", Help: "Host enrollments (POST /v1/enroll) by result: enrolled, refused (token unknown, revoked, expired or used up), bad-request, error.",
		}, []string{"result"}),
		untrusted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omahad_not_enrolled_total", Help: "What hosts without a valid credential sent to groups that require enrollment: checks (answered noupdate, not-enrolled) and events (recorded, not counted toward halts).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.checks, m.granted, m.events, m.rejected, m.dbSeconds, m.batchRows, m.queue, m.flushErrors, m.halts, m.promotions,
		m.wave, m.waveShare, m.waveOpened, m.enrollments, m.untrusted} {
		f(c)
	}
	return m
}

func (m *metrics) observeDB(op string, start time.Time) {
	m.dbSeconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// event counts one host event; only the pairs update_engine and CoreUpdate use get their own
// label values, so that hosts cannot grow the label set.
func (m *metrics) event(t omaha.EventType, r omaha.EventResult) {
	tl, rl := "other", "other"
	switch t {
	case omaha.EventTypeUpdateComplete, omaha.EventTypeUpdateDownloadStarted, omaha.EventTypeUpdateDownloadFinished, omaha.EventTypeInstanceHold:
		tl = strconv.Itoa(int(t))
	}
	switch r {
	case omaha.EventResultError, omaha.EventResultSuccess, omaha.EventResultSuccessReboot, omaha.EventResultUpdateDeferred:
		rl = strconv.Itoa(int(r))
	}
	m.events.WithLabelValues(tl, rl).Inc()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// statusWriter remembers the status code for the request metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts requests by the mux pattern that served them.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}
