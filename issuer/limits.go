package issuer

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
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
	// answered 429 at once. Default 20ms; negative turns shedding off.
	ShedQueueDelay time.Duration
	// MaxConnections bounds open client connections (default 1024, see
	// conns.go): at the bound the longest idle one is closed to make room, or
	// the new one when none is idle.
	MaxConnections int
	// AdminPerIPRPS is the sustained rate per client IP of the endpoints that
	// verify a caller's credential besides /token (introspection, the admin API,
	// the revocation feed), in buckets of their own; default 50, negative = off.
	// AdminBurst is its bucket size (default 2 x the rate).
	AdminPerIPRPS float64
	AdminBurst    int
	// AdminMaxInFlight bounds their concurrent requests before the caller is
	// verified (default 16 x GOMAXPROCS), apart from /token's MaxInFlight.
	AdminMaxInFlight int
}

// defaultAdminPerIPRPS is AdminPerIPRPS when zero.
const defaultAdminPerIPRPS = 50

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
	if c.AdminPerIPRPS == 0 {
		c.AdminPerIPRPS = defaultAdminPerIPRPS
	}
	c.AdminBurst = defaultBurst(c.AdminPerIPRPS, c.AdminBurst)
	if c.AdminMaxInFlight == 0 {
		c.AdminMaxInFlight = 16 * runtime.GOMAXPROCS(0)
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
	limitedConnBodies  = "conn_bodies"
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
	// limitedBodies counts refusals of maxPendingBodies.
	limitedBodies prometheus.Counter
	// pendingBodies counts the requests whose body is being read, on every
	// connection; maxPending bounds it (the goroutines and buffers of bodies that
	// come slowly or never).
	pendingBodies atomic.Int64
	maxPending    int64
	// gate sheds while the process is CPU-saturated (nil = off).
	gate *overloadGate
	// refusals audits the 429s above, aggregated (ratelimited.go; nil = off).
	refusals *refusalAudit
	// releasable: a handler may give its in-flight slot back early
	// (releaseSlot), once the caller is verified (the feed stream).
	releasable bool
}

// close stops the overload sampler.
func (l *tokenLimits) close() {
	if l.gate != nil {
		l.gate.close()
	}
}

func newTokenLimits(c Limits, now func() time.Time, m *metrics) *tokenLimits {
	c = c.withDefaults()
	l := &tokenLimits{maxInFlight: int64(c.MaxInFlight), maxPending: maxPendingTotal(c)}
	if c.PerIPRPS > 0 {
		l.perIP = newKeyLimiter[netip.Addr](c.PerIPRPS, c.Burst, maxLimiterKeys, now)
	}
	if c.PerWorkloadRPS > 0 {
		l.perWorkload = newKeyLimiter[string](c.PerWorkloadRPS, c.WorkloadBurst, maxLimiterKeys, now)
	}
	if c.PerClientRPS > 0 {
		l.perClient = newKeyLimiter[string](c.PerClientRPS, c.ClientBurst, maxLimiterKeys, now)
	}
	l.proxies = parseProxies(c.TrustedProxies)
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_rate_limited_total",
		Help: "Token requests refused with 429, by reason: per_ip, conn_bodies (too many bodies coming on one connection), in_flight and overload before any verification, per_workload and per_client after it.",
	}, []string{"reason"})
	l.countIn(m, vec)
	l.limitedWl = vec.WithLabelValues(limitedPerWorkload)
	l.limitedCl = vec.WithLabelValues(limitedPerClient)
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

// newAdminLimits are the pre-verification limits of the other endpoints that
// verify a credential (introspection, the admin API, the revocation feed): a
// per-IP bucket and an in-flight bound of their own, so that a flood of forged
// bearer tokens neither takes /token's capacity nor is hidden in it, and an
// operator's revocation is not queued behind a flood of exchanges; the overload
// gate is /token's (one process, one CPU).
func newAdminLimits(c Limits, now func() time.Time, m *metrics, gate *overloadGate) *tokenLimits {
	c = c.withDefaults()
	l := &tokenLimits{maxInFlight: int64(c.AdminMaxInFlight), maxPending: maxPendingTotal(c), proxies: parseProxies(c.TrustedProxies), gate: gate, releasable: true}
	if c.AdminPerIPRPS > 0 {
		l.perIP = newKeyLimiter[netip.Addr](c.AdminPerIPRPS, c.AdminBurst, maxLimiterKeys, now)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_admin_rate_limited_total",
		Help: "Introspection, admin API and revocation feed requests refused with 429 before the caller is verified, by reason: per_ip, conn_bodies, in_flight, overload.",
	}, []string{"reason"})
	l.countIn(m, vec)
	return l
}

// countIn registers vec and counts the pre-verification refusals in it.
func (l *tokenLimits) countIn(m *metrics, vec *prometheus.CounterVec) {
	m.registry.MustRegister(vec)
	l.limitedIP = vec.WithLabelValues(limitedPerIP)
	l.limitedConc = vec.WithLabelValues(limitedInFlight)
	l.limitedOvl = vec.WithLabelValues(limitedOverload)
	l.limitedBodies = vec.WithLabelValues(limitedConnBodies)
}

// parseProxies reads the trusted_proxies entries (validated with the config).
func parseProxies(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range list {
		if pfx, err := ParseTrustedProxy(p); err == nil {
			out = append(out, pfx)
		}
	}
	return out
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
// client does not take in-flight slots), then, once the body is in, the
// concurrency bound: a client that sends its body slowly or never holds a
// goroutine of its connection, not a slot.
func (l *tokenLimits) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if l.perIP != nil {
			if ok, wait := l.perIP.allow(l.clientAddr(r)); !ok {
				l.limitedIP.Inc()
				l.refused(limitedPerIP, r)
				writeRateLimited(w, wait)
				return
			}
		}
		if l.gate != nil {
			if r.ProtoMajor == 2 {
				l.gate.observeMultiplexed()
			}
			if ci, _ := r.Context().Value(connKey{}).(*connIdentity); ci != nil && ci.raw != nil && l.gate.wantAge() {
				if age, ok := kernelQueueAge(ci.raw); ok {
					l.gate.observe(age)
				}
			}
			if l.gate.refuse() {
				l.limitedOvl.Inc()
				l.refused(limitedOverload, r)
				shedResponse.writeTo(w)
				return
			}
		}
		if !l.readBody(w, r) {
			return
		}
		if l.inFlight.Add(1) > l.maxInFlight {
			l.inFlight.Add(-1)
			l.limitedConc.Inc()
			l.refused(limitedInFlight, r)
			shedResponse.writeTo(w)
			return
		}
		if l.releasable {
			release := sync.OnceFunc(func() { l.inFlight.Add(-1) })
			defer release()
			r = r.WithContext(context.WithValue(r.Context(), slotKey{}, release))
		} else {
			defer l.inFlight.Add(-1)
		}
		h(w, r)
	}
}

// bodyTimeout bounds the wait for a request's body once its headers are in
// (the in-flight bound counts a request only after it).
const bodyTimeout = 5 * time.Second

// slotKey is the context key of the function that gives a request's in-flight
// slot back.
type slotKey struct{}

// releaseSlot gives the request's in-flight slot back before its handler ends
// (a long-lived stream, once its caller is verified); a no-op without one.
func releaseSlot(ctx context.Context) {
	if release, ok := ctx.Value(slotKey{}).(func()); ok {
		release()
	}
}

// Bodies being read. A connection's first maxPendingBodies requests whose body
// is still coming wait for it up to bodyTimeout; more on the same connection
// (HTTP/2 streams) up to crowdedBodyTimeout only, then are answered 429: a
// client multiplexing many requests sends each body right after its headers (it
// is only waiting for the server to read it), while stalled bodies cost a
// goroutine and buffers each. Across connections at most maxPendingTotal are
// read at once; beyond it a request is answered 429 at once.
const (
	maxPendingBodies   = 4
	crowdedBodyTimeout = 250 * time.Millisecond
)

// maxPendingTotal is maxPendingBodies for each connection limits allow.
func maxPendingTotal(c Limits) int64 {
	conns := c.MaxConnections
	if conns <= 0 {
		conns = defaultMaxConnections
	}
	return int64(maxPendingBodies) * int64(conns)
}

// readBody reads r's body (at most maxBodyBytes, within bodyTimeout) and
// replaces it with what was read, followed by the read's error, if any: the
// handler sees the same bytes and errors (http.MaxBytesError included) as if it
// read the connection itself. It answers 429 and returns false when too many
// bodies are being read (see maxPendingBodies).
func (l *tokenLimits) readBody(w http.ResponseWriter, r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	timeout := bodyTimeout
	defer l.pendingBodies.Add(-1)
	if l.pendingBodies.Add(1) > l.maxPending {
		l.refuseBody(w, r)
		return false
	}
	if ci, _ := r.Context().Value(connKey{}).(*connIdentity); ci != nil {
		defer ci.pendingBodies.Add(-1)
		if ci.pendingBodies.Add(1) > maxPendingBodies {
			timeout = crowdedBodyTimeout
		}
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	// Sized by Content-Length when the client sent one (one allocation for the
	// usual form), growing otherwise; MaxBytesReader bounds it either way.
	size := 512
	if cl := r.ContentLength; cl > 0 && cl <= maxBodyBytes {
		size = int(cl) + 1 // +1: room to see EOF without growing
	}
	data := make([]byte, 0, size)
	body := http.MaxBytesReader(nil, r.Body, maxBodyBytes)
	var err error
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		var n int
		n, err = body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			break
		}
	}
	if timeout == crowdedBodyTimeout && errors.Is(err, os.ErrDeadlineExceeded) {
		l.refuseBody(w, r)
		return false
	}
	b := &bufferedBody{data: data, err: err}
	b.rd.Reset(data)
	r.Body = b
	return true
}

// refuseBody answers 429 for a body that cannot be waited for.
func (l *tokenLimits) refuseBody(w http.ResponseWriter, r *http.Request) {
	l.limitedBodies.Inc()
	l.refused(limitedConnBodies, r)
	writeRateLimited(w, time.Second)
}

// bufferedBody is a request body readBody read ahead: its bytes, then the read's
// error if any. The token handler takes the bytes as they are (no second copy);
// any other handler reads it like the connection.
type bufferedBody struct {
	data []byte
	err  error
	rd   bytes.Reader
}

func (b *bufferedBody) Read(p []byte) (int, error) {
	n, err := b.rd.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *bufferedBody) Close() error { return nil }

// readAllBody returns r's body, at most maxBodyBytes: the bytes readBody read
// ahead when it did, else read now.
func readAllBody(r *http.Request) ([]byte, error) {
	if b, ok := r.Body.(*bufferedBody); ok {
		return b.data, b.err
	}
	return io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
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

// clientAddr is the per-IP key of r: its clientIP, IPv6 addresses by their /64
// (one host usually owns a whole /64). An unparsable peer maps to the zero
// Addr, one shared bucket.
func (l *tokenLimits) clientAddr(r *http.Request) netip.Addr {
	a := l.clientIP(r)
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// clientIP is the client's address: the peer's or, when the peer is a trusted
// proxy, the nearest address of X-Forwarded-For that is not a trusted proxy
// (read from the right: the left part is whatever the client wrote). An
// unparsable forwarded hop stops the walk at the last trusted address.
func (l *tokenLimits) clientIP(r *http.Request) netip.Addr {
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
