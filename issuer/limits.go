package issuer

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits protects the token endpoint: before any cryptographic work, a
// token bucket per client IP and a bound on concurrent exchanges; after the
// credentials are verified, a token bucket per workload (subject) and per
// authenticated client. Requests over any limit get 429 with Retry-After.
type Limits struct {
	// PerIPRPS is the sustained rate of /token requests per client IP (IPv6 by
	// /64); 0 (default) = off. The IP is the connection's peer, or, when the peer
	// is one of TrustedProxies, the nearest untrusted address of X-Forwarded-For.
	PerIPRPS float64
	// Burst is the per-IP bucket size (default 2 x per_ip_rps, at least 1).
	Burst int
	// TrustedProxies are the CIDR prefixes (or single addresses) of reverse
	// proxies whose X-Forwarded-For is believed. Empty (default): the header is
	// ignored, as anyone can send it.
	TrustedProxies []string
	// PerWorkloadRPS is the sustained rate of exchanges per workload (upstream
	// and subject), checked once the subject token is verified; 0 (default) =
	// off. WorkloadBurst is its bucket size (default 2 x the rate, at least 1).
	PerWorkloadRPS float64
	WorkloadBurst  int
	// PerClientRPS is the sustained rate of requests per authenticated client
	// (mTLS or private_key_jwt), checked once the client is authenticated; 0
	// (default) = off. ClientBurst is its bucket size.
	PerClientRPS float64
	ClientBurst  int
	// MaxInFlight bounds concurrent /token requests (default 64 x GOMAXPROCS);
	// requests beyond it are answered 429 at once instead of queueing.
	MaxInFlight int
	// ShedQueueDelay: while requests wait longer than this before the server gets
	// to them (kernel socket queue or CPU run queue, see overload.go) and the
	// process uses most of the CPU it may use, a fraction of /token requests is
	// answered 429 at once. Default 50ms; negative turns shedding off.
	ShedQueueDelay time.Duration
}

// ParseTrustedProxy reads a trusted_proxies entry: a CIDR prefix or a single
// address (as a /32 or /128).
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// defaultBurst is a bucket of two seconds' worth, at least 1.
func defaultBurst(rate float64, burst int) int {
	if rate > 0 && burst == 0 {
		return max(1, int(math.Ceil(2*rate)))
	}
	return burst
}

// withDefaults fills the zero values.
func (c Limits) withDefaults() Limits {
	c.Burst = defaultBurst(c.PerIPRPS, c.Burst)
	c.WorkloadBurst = defaultBurst(c.PerWorkloadRPS, c.WorkloadBurst)
	c.ClientBurst = defaultBurst(c.PerClientRPS, c.ClientBurst)
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2 * runtime.GOMAXPROCS(0) * 32
	}
	return c
}

// Rate-limit reasons (label values of safeconduct_rate_limited_total).
const (
	limitedPerIP       = "per_ip"
	limitedInFlight    = "in_flight"
	limitedPerWorkload = "per_workload"
	limitedPerClient   = "per_client"
	limitedOverload    = "overload"
)

// maxLimiterKeys bounds the per-IP table.
const maxLimiterKeys = 100_000

// limiterShards is the number of independently locked parts of the per-IP table.
const limiterShards = 64

// tokenLimits is the protection of /token.
type tokenLimits struct {
	perIP       *keyLimiter[netip.Addr] // nil = off
	perWorkload *keyLimiter[string]     // nil = off
	perClient   *keyLimiter[string]     // nil = off
	proxies     []netip.Prefix
	maxInFlight int64
	inFlight    atomic.Int64
	limitedIP   prometheus.Counter
	limitedConc prometheus.Counter
	limitedWl   prometheus.Counter
	limitedCl   prometheus.Counter
	limitedOvl  prometheus.Counter
	// gate sheds while the process is CPU-saturated (nil = off).
	gate *overloadGate
}

// close stops the overload sampler.
func (l *tokenLimits) close() {
	if l.gate != nil {
		l.gate.close()
	}
}

func newTokenLimits(c Limits, now func() time.Time, m *metrics) *tokenLimits {
	c = c.withDefaults()
	l := &tokenLimits{maxInFlight: int64(c.MaxInFlight)}
	if c.PerIPRPS > 0 {
		l.perIP = newKeyLimiter[netip.Addr](c.PerIPRPS, c.Burst, maxLimiterKeys, now)
	}
	if c.PerWorkloadRPS > 0 {
		l.perWorkload = newKeyLimiter[string](c.PerWorkloadRPS, c.WorkloadBurst, maxLimiterKeys, now)
	}
	if c.PerClientRPS > 0 {
		l.perClient = newKeyLimiter[string](c.PerClientRPS, c.ClientBurst, maxLimiterKeys, now)
	}
	for _, p := range c.TrustedProxies {
		if pfx, err := ParseTrustedProxy(p); err == nil { // validated with the config
			l.proxies = append(l.proxies, pfx)
		}
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_rate_limited_total",
		Help: "Token requests refused with 429, by reason: per_ip and in_flight before any verification, per_workload and per_client after it.",
	}, []string{"reason"})
	m.registry.MustRegister(vec)
	l.limitedIP = vec.WithLabelValues(limitedPerIP)
	l.limitedConc = vec.WithLabelValues(limitedInFlight)
	l.limitedWl = vec.WithLabelValues(limitedPerWorkload)
	l.limitedCl = vec.WithLabelValues(limitedPerClient)
	l.limitedOvl = vec.WithLabelValues(limitedOverload)
	if c.ShedQueueDelay >= 0 {
		l.gate = newOverloadGate(c.ShedQueueDelay)
		l.gate.start()
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "safeconduct_overload_shed_ratio",
			Help: "Fraction of /token requests refused with 429 because requests wait longer than limits.shed_queue_delay while the process uses most of the CPU it may use.",
		}, func() float64 {
			return float64(l.gate.shed.Load()) / shedScale
		}))
	}
	return l
}

// allowWorkload takes a token from the bucket of the verified workload
// (upstream and ID); nil when it may proceed, else the 429 to answer.
func (l *tokenLimits) allowWorkload(upstream, id string) *oauthError {
	if l.perWorkload == nil {
		return nil
	}
	if ok, wait := l.perWorkload.allow(upstream + "\x00" + id); !ok {
		l.limitedWl.Inc()
		return rateLimited(wait)
	}
	return nil
}

// allowClient takes a token from the bucket of an authenticated client.
func (l *tokenLimits) allowClient(id string) *oauthError {
	if l.perClient == nil {
		return nil
	}
	if ok, wait := l.perClient.allow(id); !ok {
		l.limitedCl.Inc()
		return rateLimited(wait)
	}
	return nil
}

// wrap applies the limits before h: first the caller's bucket (so that a flooding
// client does not take in-flight slots), then the concurrency bound.
func (l *tokenLimits) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if l.perIP != nil {
			if ok, wait := l.perIP.allow(l.clientAddr(r)); !ok {
				l.limitedIP.Inc()
				writeRateLimited(w, wait)
				return
			}
		}
		if l.gate != nil {
			if ci, _ := r.Context().Value(connKey{}).(*connIdentity); ci != nil && ci.raw != nil {
				if age, ok := kernelQueueAge(ci.raw); ok {
					l.gate.observe(age)
				}
			}
			if l.gate.refuse() {
				l.limitedOvl.Inc()
				shedResponse.writeTo(w)
				return
			}
		}
		if l.inFlight.Add(1) > l.maxInFlight {
			l.inFlight.Add(-1)
			l.limitedConc.Inc()
			shedResponse.writeTo(w)
			return
		}
		defer l.inFlight.Add(-1)
		h(w, r)
	}
}

// writeRateLimited answers 429 with an RFC 6749 §5.2 style body and Retry-After in
// whole seconds (at least 1).
func writeRateLimited(w http.ResponseWriter, wait time.Duration) {
	writeError(w, rateLimited(wait))
}

// rateLimited is the 429 answer for a wait.
func rateLimited(wait time.Duration) *oauthError {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	return &oauthError{
		Code:        codeTemporarilyUnavailable,
		Description: "too many requests; retry after " + strconv.Itoa(secs) + "s",
		Status:      http.StatusTooManyRequests,
		RetryAfter:  secs,
	}
}

// maxForwardedHops bounds how much of X-Forwarded-For is read.
const maxForwardedHops = 16

// clientAddr is the per-IP key of r: the peer's address or, when the peer is a
// trusted proxy, the nearest address of X-Forwarded-For that is not a trusted
// proxy (read from the right: the left part is whatever the client wrote).
// IPv6 addresses count by their /64 (one host usually owns a whole /64). An
// unparsable peer maps to the zero Addr, one shared bucket; an unparsable
// forwarded hop stops the walk at the last trusted address.
func (l *tokenLimits) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if len(l.proxies) > 0 && l.trusted(a) {
		hops := 0
		fields := r.Header.Values("X-Forwarded-For")
	walk:
		for i := len(fields) - 1; i >= 0; i-- {
			parts := strings.Split(fields[i], ",")
			for j := len(parts) - 1; j >= 0; j-- {
				hop, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
				if hops++; err != nil || hops > maxForwardedHops {
					break walk
				}
				a = hop.Unmap()
				if !l.trusted(a) {
					break walk
				}
			}
		}
	}
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

func (l *tokenLimits) trusted(a netip.Addr) bool {
	for _, p := range l.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// keyLimiter is a token bucket per key in a mutex-sharded map. Memory is
// bounded: a full shard first drops buckets that have refilled
// (indistinguishable from a new one), then, if still full, an arbitrary bucket.
type keyLimiter[K comparable] struct {
	rate     float64 // tokens per second
	burst    float64
	perShard int
	now      func() time.Time
	seed     maphash.Seed
	shards   [limiterShards]keyShard[K]
}

type keyShard[K comparable] struct {
	mu      sync.Mutex
	buckets map[K]*bucket
	_       [40]byte // keep shards on separate cache lines
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last update
}

func newKeyLimiter[K comparable](rate float64, burst, maxKeys int, now func() time.Time) *keyLimiter[K] {
	if now == nil {
		now = time.Now
	}
	l := &keyLimiter[K]{rate: rate, burst: float64(burst), perShard: max(1, maxKeys/limiterShards), now: now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].buckets = make(map[K]*bucket)
	}
	return l
}

// allow takes one token from key's bucket; when none is left it reports how long
// until one will be.
func (l *keyLimiter[K]) allow(key K) (bool, time.Duration) {
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
func (l *keyLimiter[K]) evict(sh *keyShard[K], now int64) {
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
func (l *keyLimiter[K]) size() int {
	n := 0
	for i := range l.shards {
		l.shards[i].mu.Lock()
		n += len(l.shards[i].buckets)
		l.shards[i].mu.Unlock()
	}
	return n
}
