package watch

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the watcher's Prometheus metrics (names in README "Watcher").
type Metrics struct {
	Registry      *prometheus.Registry
	reports       *prometheus.CounterVec
	retries       *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	queueLength   prometheus.Gauge
	queueCapacity prometheus.Gauge
	queueFull     prometheus.Counter
	inFlight      prometheus.Gauge
	events        *prometheus.CounterVec
	sourceUp      *prometheus.GaugeVec
}

// NewMetrics registers the metrics in a new registry.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stswatch_reports_total",
			Help: "Reports dealt with, by source, kind (revoke, change) and outcome (delivered, forbidden, rejected)."}, []string{"source", "kind", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stswatch_report_retries_total",
			Help: "Failed delivery attempts that are retried (STS unreachable, 5xx, 429, credential refused)."}, []string{"kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "stswatch_report_latency_seconds",
			Help:    "From the source observing the event to the STS accepting the report.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300}}, []string{"source", "kind"}),
		queueLength:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "stswatch_queue_length", Help: "Reports waiting for delivery."}),
		queueCapacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "stswatch_queue_capacity", Help: "queue_size: the bound of the report queue."}),
		queueFull: prometheus.NewCounter(prometheus.CounterOpts{Name: "stswatch_queue_full_total",
			Help: "Times a source had to wait for room in the report queue."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "stswatch_reports_in_flight", Help: "Reports being delivered (including their retries)."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "stswatch_events_total",
			Help: "Events seen by the sources that lead to a report, by source and event."}, []string{"source", "event"}),
		sourceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "stswatch_source_up",
			Help: "1 while the source reaches its API (SPIRE server, kube-apiserver) and is in sync."}, []string{"source"}),
	}
	reg.MustRegister(m.reports, m.retries, m.latency, m.queueLength, m.queueCapacity, m.queueFull, m.inFlight, m.events, m.sourceUp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Event counts one event of a source.
func (m *Metrics) Event(source, event string) { m.events.WithLabelValues(source, event).Inc() }

// SourceUp records whether a source is in sync.
func (m *Metrics) SourceUp(source string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.sourceUp.WithLabelValues(source).Set(v)
}

// Checker is something readiness depends on: nil when ready.
type Checker interface {
	Ready() error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func() error

// Ready calls f.
func (f CheckFunc) Ready() error { return f() }

// Health serves /healthz (the process runs), /readyz (every checker ready) and
// /metrics.
type Health struct {
	mu     sync.Mutex
	checks map[string]Checker
	m      *Metrics
}

// NewHealth returns a handler with no checks yet.
func NewHealth(m *Metrics) *Health { return &Health{checks: map[string]Checker{}, m: m} }

// Add registers a readiness check.
func (h *Health) Add(name string, c Checker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// Problems returns name -> reason for every check that is not ready.
func (h *Health) Problems() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for name, c := range h.checks {
		if err := c.Ready(); err != nil {
			out[name] = err.Error()
		}
	}
	return out
}

// Handler is the ops mux.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(h.m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		p := h.Problems()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if len(p) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": len(p) == 0, "problems": p})
	})
	return mux
}
