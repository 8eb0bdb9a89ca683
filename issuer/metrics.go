package issuer

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of its own (no
// package-level globals). Labels have fixed, low cardinality.
type metrics struct {
	registry  *prometheus.Registry
	requests  *prometheus.CounterVec
	exchanges *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	decisions *prometheus.CounterVec
	// audited counts audit-mode (dry-run) rule hits by rule and would-be outcome.
	audited         *prometheus.CounterVec
	revocations     *prometheus.CounterVec
	changesFired    *prometheus.CounterVec
	feedSubscribers prometheus.Gauge
	// feedEventsSent counts revocation events written to feed streams.
	feedEventsSent prometheus.Counter
	// feedLag observes, per created event written to a feed stream, how long after
	// the entry's Created it was written (observeFeedLag).
	feedLag prometheus.Histogram
	// storeLatency and storeErrors time the revocation store's calls and count
	// their failures, by operation (see instrumentedStore).
	storeLatency *prometheus.HistogramVec
	storeErrors  *prometheus.CounterVec
	// policyReloads counts policy reloads by result (ok, error).
	policyReloads *prometheus.CounterVec
	// adminDecisions counts the admin API's policy decisions by admin rule,
	// action and outcome.
	adminDecisions *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeconduct_http_requests_total",
			Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeconduct_exchanges_total",
			Help: "Token exchanges by outcome (issued, refused) and OAuth error code.",
		}, []string{"outcome", "error"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "safeconduct_exchange_duration_seconds",
			Help:    "Time to decide and answer one token exchange, by outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"outcome"}),
	}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_policy_decisions_total",
		Help: "Policy decisions by deciding rule (empty when no rule decided) and outcome; stsctl policy review reads it to find unused rules.",
	}, []string{"rule", "outcome"})
	m.audited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_policy_audit_hits_total",
		Help: "Audit-mode (dry-run) rules that matched, by rule and the outcome they would have produced.",
	}, []string{"rule", "would"})
	m.revocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_revocations_total",
		Help: "Revocation entries recorded through the admin API, by kind (revoke, block).",
	}, []string{"kind"})
	m.changesFired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_runtime_changes_fired_total",
		Help: "Revocations fired because a workload instance showed changed binding attributes, by upstream.",
	}, []string{"upstream"})
	m.feedSubscribers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "safeconduct_feed_subscribers",
		Help: "Open revocation feed streams.",
	})
	m.feedEventsSent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "safeconduct_feed_events_sent_total",
		Help: "Revocation events written to feed streams (each subscriber counted).",
	})
	m.feedLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "safeconduct_feed_lag_seconds",
		Help: "Per created event written to a feed stream (each subscriber counted): the time since the entry's Created, " +
			"which the store sets a grace (1 s or more) ahead of its clock, so lags within the grace read 0. Lifted events are not observed.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600},
	})
	m.storeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "safeconduct_revocation_store_seconds",
		Help:    "Revocation store call latency by operation (admit, revoked, create, lift, bind, snapshot, events).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"op"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_revocation_store_errors_total",
		Help: "Revocation store calls that failed (store unreachable or erroring), by operation.",
	}, []string{"op"})
	m.policyReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_policy_reloads_total",
		Help: "Policy reloads by result (ok, error).",
	}, []string{"result"})
	m.adminDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_policy_admin_decisions_total",
		Help: "Admin API policy decisions by deciding admin rule (empty when none granted), action and outcome; stsctl policy review reads it to find unused admin rules.",
	}, []string{"rule", "action", "outcome"})
	m.registry.MustRegister(m.requests, m.exchanges, m.latency, m.decisions, m.audited, m.policyReloads, m.revocations, m.changesFired, m.feedSubscribers,
		m.feedEventsSent, m.feedLag, m.storeLatency, m.storeErrors, m.adminDecisions, buildInfo(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.preinit()
	return m
}

func (m *metrics) observeExchange(outcome, code string, d time.Duration) {
	m.exchanges.WithLabelValues(outcome, code).Inc()
	m.latency.WithLabelValues(outcome).Observe(d.Seconds())
}

// observeFeedLag records the lag of a created event written at now for an entry
// created at created. Created is the store's clock plus a grace (see
// revocation.Store.Create), so an event sent within the grace has a negative lag:
// it is clamped to 0. The histogram therefore shows delivery later than the grace
// (a slow stream, or a subscriber catching up from an old cursor). A skew between
// the store's clock and this server's shifts every reading.
func (m *metrics) observeFeedLag(now, created time.Time) {
	m.feedLag.Observe(max(0, now.Sub(created).Seconds()))
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// statusRecorder captures the response status (the first final one written, 200
// when the handler only writes a body) for the request counter and the server
// span.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote && code >= 200 {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts requests to endpoint by status code.
func (m *metrics) instrument(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		m.requests.WithLabelValues(endpoint, strconv.Itoa(rec.status)).Inc()
	}
}
