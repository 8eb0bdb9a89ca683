package issuer

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/safeconduct/safeconduct/revocation"
)

// UpstreamKeyStats are the key fetching counters of one upstream verifier, read at
// scrape time.
type UpstreamKeyStats struct {
	// Fetches counts key requests made (discovery, JWKS, bundle endpoint);
	// Failures counts refreshes that failed or were refused.
	Fetches, Failures uint64
	// Keys is the number of usable keys (JWT authorities) held now.
	Keys int
}

// upstreamStats names one upstream and the function reading its verifier's
// stats (built by buildAttester).
type upstreamStats struct {
	name  string
	stats func() UpstreamKeyStats
}

var (
	descUpstreamFetches = prometheus.NewDesc("safeconduct_upstream_key_fetches_total",
		"Upstream key requests made (OIDC discovery and JWKS, SPIFFE bundle endpoint), by upstream.",
		[]string{"upstream"}, nil)
	descUpstreamFailures = prometheus.NewDesc("safeconduct_upstream_key_fetch_failures_total",
		"Upstream key refreshes that failed or fetched a set that was refused, by upstream.",
		[]string{"upstream"}, nil)
	descUpstreamKeys = prometheus.NewDesc("safeconduct_upstream_keys",
		"Usable upstream keys (JWT authorities) held now, by upstream.",
		[]string{"upstream"}, nil)
	descKeyAge = prometheus.NewDesc("safeconduct_signing_key_age_seconds",
		"Age since activation of the active signing key (state=active) and of the oldest published key (state=published).",
		[]string{"state"}, nil)
)

// upstreamCollector reads each upstream verifier's stats at scrape time.
type upstreamCollector struct{ upstreams []upstreamStats }

func (c upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUpstreamFetches
	ch <- descUpstreamFailures
	ch <- descUpstreamKeys
}

func (c upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.upstreams {
		st := u.stats()
		ch <- prometheus.MustNewConstMetric(descUpstreamFetches, prometheus.CounterValue, float64(st.Fetches), u.name)
		ch <- prometheus.MustNewConstMetric(descUpstreamFailures, prometheus.CounterValue, float64(st.Failures), u.name)
		ch <- prometheus.MustNewConstMetric(descUpstreamKeys, prometheus.GaugeValue, float64(st.Keys), u.name)
	}
}

// keyAgeCollector reads the live key ring at scrape time. Keys without an
// activation time (files not named key-<time>-<kid8>.pem) are left out.
type keyAgeCollector struct {
	ring func() *keyRing
	now  func() time.Time
}

func (c keyAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descKeyAge }

func (c keyAgeCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.ring()
	if r == nil {
		return
	}
	now := c.now()
	if r.active != nil && !r.active.activation.IsZero() {
		ch <- prometheus.MustNewConstMetric(descKeyAge, prometheus.GaugeValue, now.Sub(r.active.activation).Seconds(), "active")
	}
	var oldest time.Time
	for _, k := range r.keys {
		if !k.activation.IsZero() && (oldest.IsZero() || k.activation.Before(oldest)) {
			oldest = k.activation
		}
	}
	if !oldest.IsZero() {
		ch <- prometheus.MustNewConstMetric(descKeyAge, prometheus.GaugeValue, now.Sub(oldest).Seconds(), "published")
	}
}

// registerCollectors adds the scrape-time collectors of the signing keys and the
// upstreams to the registry.
func (m *metrics) registerCollectors(keys *signing, now func() time.Time, upstreams []upstreamStats) {
	m.registry.MustRegister(
		upstreamCollector{upstreams: upstreams},
		keyAgeCollector{ring: keys.currentRing, now: now},
	)
}

// Revocation store operations, the op label of the store metrics.
const (
	storeOpAdmit    = "admit"
	storeOpRevoked  = "revoked"
	storeOpCreate   = "create"
	storeOpLift     = "lift"
	storeOpBind     = "bind"
	storeOpSnapshot = "snapshot"
	storeOpEvents   = "events"
	storeOpClaim    = "claim"
)

// instrumentedStore times the revocation store's calls and counts its errors.
// Outcomes that are answers rather than failures (blocked, not found, invalid
// argument, expired cursor, the caller going away) are not errors. Wait, List,
// Ping and Close pass through.
type instrumentedStore struct {
	revocation.Store
	m *metrics
}

func instrumentStore(st revocation.Store, m *metrics) revocation.Store {
	if st == nil {
		return nil
	}
	return &instrumentedStore{Store: st, m: m}
}

func (s *instrumentedStore) observe(op string, start time.Time, err error) {
	s.m.storeLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, revocation.ErrBlocked) && !errors.Is(err, revocation.ErrNotFound) &&
		!errors.Is(err, revocation.ErrInvalid) && !errors.Is(err, revocation.ErrCursorExpired) &&
		!errors.Is(err, context.Canceled) {
		s.m.storeErrors.WithLabelValues(op).Inc()
	}
}

func (s *instrumentedStore) Admit(ctx context.Context, f *revocation.Facts, instance string) (revocation.Admission, error) {
	start := time.Now()
	a, err := s.Store.Admit(ctx, f, instance)
	s.observe(storeOpAdmit, start, err)
	return a, err
}

func (s *instrumentedStore) Bind(ctx context.Context, instance string, f *revocation.Facts, ttl time.Duration) (*revocation.Entry, error) {
	start := time.Now()
	e, err := s.Store.Bind(ctx, instance, f, ttl)
	s.observe(storeOpBind, start, err)
	return e, err
}

func (s *instrumentedStore) Revoked(ctx context.Context, f *revocation.Facts) (*revocation.Entry, error) {
	start := time.Now()
	e, err := s.Store.Revoked(ctx, f)
	s.observe(storeOpRevoked, start, err)
	return e, err
}

func (s *instrumentedStore) Create(ctx context.Context, e revocation.Entry) (revocation.Entry, error) {
	start := time.Now()
	out, err := s.Store.Create(ctx, e)
	s.observe(storeOpCreate, start, err)
	return out, err
}

func (s *instrumentedStore) Lift(ctx context.Context, id, actor, reason string) (revocation.Entry, error) {
	start := time.Now()
	out, err := s.Store.Lift(ctx, id, actor, reason)
	s.observe(storeOpLift, start, err)
	return out, err
}

func (s *instrumentedStore) Claim(ctx context.Context, key string, until time.Time) (bool, error) {
	start := time.Now()
	fresh, err := s.Store.Claim(ctx, key, until)
	s.observe(storeOpClaim, start, err)
	return fresh, err
}

func (s *instrumentedStore) Snapshot(ctx context.Context) ([]revocation.Entry, string, error) {
	start := time.Now()
	entries, cursor, err := s.Store.Snapshot(ctx)
	s.observe(storeOpSnapshot, start, err)
	return entries, cursor, err
}

func (s *instrumentedStore) Events(ctx context.Context, cursor string, limit int) ([]revocation.Event, string, error) {
	start := time.Now()
	events, next, err := s.Store.Events(ctx, cursor, limit)
	s.observe(storeOpEvents, start, err)
	return events, next, err
}
