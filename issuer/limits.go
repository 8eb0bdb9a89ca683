package issuer

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LimitsConfig protects the token endpoint before any cryptographic work: a token
// bucket per client IP and a bound on concurrent exchanges. Requests over either
// limit get 429 with Retry-After.
type LimitsConfig struct {
	// PerIPRPS is the sustained rate of /token requests per client IP
	// (r.RemoteAddr; IPv6 by /64); 0 (default) = off. Behind a proxy every
	// request has the proxy's address, so leave it off there.
	PerIPRPS float64 `yaml:"per_ip_rps"`
	// Burst is the per-IP bucket size (default 2 x per_ip_rps, at least 1).
	Burst int `yaml:"burst"`
	// MaxInFlight bounds concurrent /token requests (default 64 x GOMAXPROCS);
	// requests beyond it are answered 429 at once instead of queueing.
	MaxInFlight int `yaml:"max_in_flight"`
}

func (c *LimitsConfig) validate(v *validator) {
	if c.PerIPRPS < 0 || math.IsNaN(c.PerIPRPS) || math.IsInf(c.PerIPRPS, 0) {
		v.at("limits.per_ip_rps must be 0 (off) or positive", "limits", "per_ip_rps")
	}
	if c.Burst < 0 {
		v.at("limits.burst must not be negative", "limits", "burst")
	}
	if c.MaxInFlight < 0 {
		v.at("limits.max_in_flight must not be negative (0 = default)", "limits", "max_in_flight")
	}
}

// withDefaults fills the zero values.
func (c LimitsConfig) withDefaults() LimitsConfig {
	if c.PerIPRPS > 0 && c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(2*c.PerIPRPS)))
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2 * runtime.GOMAXPROCS(0) * 32
	}
	return c
}

// Rate-limit reasons (label values of safeconduct_rate_limited_total).
const (
	limitedPerIP    = "per_ip"
	limitedInFlight = "in_flight"
)

// maxLimiterKeys bounds the per-IP table.
const maxLimiterKeys = 100_000

// limiterShards is the number of independently locked parts of the per-IP table.
const limiterShards = 64

// tokenLimits is the protection in front of /token.
type tokenLimits struct {
	perIP       *ipLimiter // nil = off
	maxInFlight int64
	inFlight    atomic.Int64
	limitedIP   prometheus.Counter
	limitedConc prometheus.Counter
}

func newTokenLimits(c LimitsConfig, now func() time.Time, m *metrics) *tokenLimits {
	c = c.withDefaults()
	l := &tokenLimits{maxInFlight: int64(c.MaxInFlight)}
	if c.PerIPRPS > 0 {
		l.perIP = newIPLimiter(c.PerIPRPS, c.Burst, maxLimiterKeys, now)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_rate_limited_total",
		Help: "Token requests refused with 429 before any verification, by reason (per_ip, in_flight).",
	}, []string{"reason"})
	m.registry.MustRegister(vec)
	l.limitedIP = vec.WithLabelValues(limitedPerIP)
	l.limitedConc = vec.WithLabelValues(limitedInFlight)
	return l
}

// wrap applies the limits before h: first the caller's bucket (so that a flooding
// client does not take in-flight slots), then the concurrency bound.
func (l *tokenLimits) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if l.perIP != nil {
			if ok, wait := l.perIP.allow(clientAddr(r)); !ok {
				l.limitedIP.Inc()
				writeRateLimited(w, wait)
				return
			}
		}
		if l.inFlight.Add(1) > l.maxInFlight {
			l.inFlight.Add(-1)
			l.limitedConc.Inc()
			writeRateLimited(w, time.Second)
			return
		}
		defer l.inFlight.Add(-1)
		h(w, r)
	}
}

// writeRateLimited answers 429 with an RFC 6749 §5.2 style body and Retry-After in
// whole seconds (at least 1).
func writeRateLimited(w http.ResponseWriter, wait time.Duration) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	writeError(w, &oauthError{
		Code:        codeTemporarilyUnavailable,
		Description: "too many requests; retry after " + strconv.Itoa(secs) + "s",
		Status:      http.StatusTooManyRequests,
		RetryAfter:  secs,
	})
}

// clientAddr is the rate-limit key of r: the remote IP, IPv6 addresses by their
// /64 (one host usually owns a whole /64). An unparsable address maps to the zero
// Addr, one shared bucket.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// ipLimiter is a token bucket per key in a mutex-sharded map. Memory is bounded:
// a full shard first drops buckets that have refilled (indistinguishable from a
// new one), then, if still full, an arbitrary bucket.
type ipLimiter struct {
	rate     float64 // tokens per second
	burst    float64
	perShard int
	now      func() time.Time
	seed     maphash.Seed
	shards   [limiterShards]ipShard
}

type ipShard struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	_       [40]byte // keep shards on separate cache lines
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last update
}

func newIPLimiter(rate float64, burst, maxKeys int, now func() time.Time) *ipLimiter {
	if now == nil {
		now = time.Now
	}
	l := &ipLimiter{rate: rate, burst: float64(burst), perShard: max(1, maxKeys/limiterShards), now: now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[netip.Addr]*bucket)
	}
	return l
}

// allow takes one token from key's bucket; when none is left it reports how long
// until one will be.
func (l *ipLimiter) allow(key netip.Addr) (bool, time.Duration) {
	now := l.now().UnixNano()
	sh := &l.shards[maphash.Comparable(l.seed, key)%limiterShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.buckets[key]
	if b == nil {
		if len(sh.buckets) >= l.perShard {
			l.evict(sh, now)
		}
		b = &bucket{tokens: l.burst, last: now}
		sh.buckets[key] = b
	} else if el := now - b.last; el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)*l.rate/1e9)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * 1e9)
}

// evict makes room in a full shard (called with its lock held).
func (l *ipLimiter) evict(sh *ipShard, now int64) {
	for k, b := range sh.buckets {
		if b.tokens+float64(now-b.last)*l.rate/1e9 >= l.burst {
			delete(sh.buckets, k)
		}
	}
	for k := range sh.buckets {
		if len(sh.buckets) < l.perShard {
			break
		}
		delete(sh.buckets, k)
	}
}

// size is the number of tracked keys (tests).
func (l *ipLimiter) size() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].buckets)
		l.shards[i].mu.Unlock()
	}
	return n
}
