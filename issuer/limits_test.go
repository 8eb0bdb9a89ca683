package issuer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for bucket refill.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func TestIPLimiterRefill(t *testing.T) {
	clk := newFakeClock()
	l := newIPLimiter(1, 2, 1000, clk.now)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 2 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow(a)
	if ok || wait != time.Second {
		t.Fatalf("empty bucket: ok %v wait %v, want refused for 1s", ok, wait)
	}
	if ok, _ := l.allow(netip.MustParseAddr("192.0.2.2")); !ok {
		t.Fatal("another IP shares the bucket")
	}
	clk.advance(500 * time.Millisecond)
	if ok, wait := l.allow(a); ok || wait != 500*time.Millisecond {
		t.Fatalf("half refilled: ok %v wait %v", ok, wait)
	}
	clk.advance(500 * time.Millisecond)
	if ok, _ := l.allow(a); !ok {
		t.Fatal("not refilled after 1s")
	}
	clk.advance(time.Hour)
	for i := range 2 {
		if ok, _ := l.allow(a); !ok {
			t.Fatalf("refill exceeded nothing but request %d refused", i)
		}
	}
	if ok, _ := l.allow(a); ok {
		t.Fatal("bucket refilled beyond burst")
	}
}

func TestIPLimiterBoundedMemory(t *testing.T) {
	clk := newFakeClock()
	const maxKeys = 64 * 4
	l := newIPLimiter(1, 1, maxKeys, clk.now)
	for i := range 20_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.allow(a)
		if i%1000 == 0 {
			clk.advance(10 * time.Millisecond)
		}
	}
	if n := l.size(); n > maxKeys {
		t.Fatalf("%d keys tracked, cap %d", n, maxKeys)
	}
}

func TestClientAddr(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:5555":                    "192.0.2.7",
		"[::ffff:192.0.2.7]:5555":           "192.0.2.7",
		"[2001:db8:1:2:aaaa:bbbb:cccc:1]:1": "2001:db8:1:2::",
		"[2001:db8:1:2:ffff::9]:1":          "2001:db8:1:2::",
		"garbage":                           "invalid IP",
	} {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		r.RemoteAddr = remote
		if got := clientAddr(r).String(); got != want {
			t.Errorf("%s: key %s, want %s", remote, got, want)
		}
	}
}

func rateLimitedCount(t *testing.T, m *metrics, reason string) float64 {
	t.Helper()
	mfs, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "safeconduct_rate_limited_total" {
			continue
		}
		for _, met := range mf.GetMetric() {
			for _, lp := range met.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					return met.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func assertRateLimited(t *testing.T, w *httptest.ResponseRecorder, retryAfter string) {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", w.Code, w.Body)
	}
	if got := w.Header().Get("Retry-After"); got != retryAfter {
		t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if body["error"] != codeTemporarilyUnavailable || body["error_description"] == "" {
		t.Fatalf("body %v", body)
	}
}

func TestTokenLimitsPerIP(t *testing.T) {
	clk := newFakeClock()
	m := newMetrics()
	l := newTokenLimits(LimitsConfig{PerIPRPS: 0.5, Burst: 1}, clk.now, m)
	var calls atomic.Int32
	h := l.wrap(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1) })
	do := func(remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h(w, r)
		return w
	}
	if w := do("192.0.2.1:1000"); w.Code != 200 {
		t.Fatalf("first request: %d", w.Code)
	}
	assertRateLimited(t, do("192.0.2.1:1001"), "2")
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times; a limited request must not reach it", calls.Load())
	}
	if w := do("192.0.2.9:1000"); w.Code != 200 {
		t.Fatalf("other IP: %d", w.Code)
	}
	clk.advance(1500 * time.Millisecond)
	assertRateLimited(t, do("192.0.2.1:1002"), "1")
	clk.advance(500 * time.Millisecond)
	if w := do("192.0.2.1:1003"); w.Code != 200 {
		t.Fatalf("after refill: %d", w.Code)
	}
	if n := rateLimitedCount(t, m, limitedPerIP); n != 2 {
		t.Fatalf("per_ip counter %v, want 2", n)
	}
}

func TestTokenLimitsInFlight(t *testing.T) {
	const n = 3
	m := newMetrics()
	l := newTokenLimits(LimitsConfig{MaxInFlight: n}, nil, m)
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	h := l.wrap(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	})
	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		w := httptest.NewRecorder()
		h(w, r)
		return w
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() { codes[i] = do().Code })
	}
	for range n {
		<-entered
	}
	assertRateLimited(t, do(), "1")
	close(release)
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Fatalf("blocked request %d: %d", i, c)
		}
	}
	// Slots are given back.
	release = make(chan struct{})
	close(release)
	go func() {
		for range entered {
		}
	}()
	for range 2 * n {
		if w := do(); w.Code != 200 {
			t.Fatalf("after release: %d", w.Code)
		}
	}
	if got := rateLimitedCount(t, m, limitedInFlight); got != 1 {
		t.Fatalf("in_flight counter %v, want 1", got)
	}
	close(entered)
}

func TestLimitsDefaults(t *testing.T) {
	c := LimitsConfig{PerIPRPS: 200}.withDefaults()
	if c.Burst != 400 || c.MaxInFlight <= 0 {
		t.Fatalf("defaults %+v", c)
	}
	if c := (LimitsConfig{PerIPRPS: 0.1}).withDefaults(); c.Burst != 1 {
		t.Fatalf("burst for a slow rate %d, want 1", c.Burst)
	}
}

func TestLimitsConfig(t *testing.T) {
	cfg, err := ParseConfig("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: 200, burst: 400, max_in_flight: 512}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits != (LimitsConfig{PerIPRPS: 200, Burst: 400, MaxInFlight: 512}) {
		t.Fatalf("limits %+v", cfg.Limits)
	}
	_, err = ParseConfig("sts.yaml", []byte(goodConfig+"limits: {per_ip_rps: -1, burst: -2, max_in_flight: -3}\n"))
	if err == nil {
		t.Fatal("negative limits accepted")
	}
	for _, want := range []string{"per_ip_rps", "burst", "max_in_flight"} {
		if !strings.Contains(err.Error(), "limits."+want) {
			t.Errorf("no problem for %s in %v", want, err)
		}
	}
}

// TestTokenRateLimitedEndToEnd drives the limit through the real server: the
// limit answers before the subject token is looked at, and is counted.
func TestTokenRateLimitedEndToEnd(t *testing.T) {
	ts := startSTS(t, stsOptions{tokens: "tokens: {default_ttl: 5m, max_ttl: 1h}\nlimits: {per_ip_rps: 0.01, burst: 2}\n"})
	for i := range 2 {
		if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.raw)
		}
	}
	r := ts.post(t, ts.form("not-even-a-jwt"))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != codeTemporarilyUnavailable {
		t.Fatalf("third request: %d %v %s", r.status, r.header, r.raw)
	}
	metricsText := ts.do(t, http.MethodGet, "/metrics", "", "", nil).raw
	for _, want := range []string{
		`safeconduct_rate_limited_total{reason="per_ip"} 1`,
		`safeconduct_http_requests_total{code="429",endpoint="token"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(ts.audit.String(), "not-even-a-jwt") || strings.Count(ts.audit.String(), `"msg":"exchange"`) != 2 {
		t.Fatalf("a limited request reached the exchange:\n%s", ts.audit.String())
	}
}

// BenchmarkTokenLimits is the cost the limits add to every /token request.
func BenchmarkTokenLimits(b *testing.B) {
	for _, ips := range []int{1, 1024} {
		b.Run(fmt.Sprintf("ips-%d", ips), func(b *testing.B) {
			l := newTokenLimits(LimitsConfig{PerIPRPS: 1e9, Burst: 1e9, MaxInFlight: 1 << 30}, nil, newMetrics())
			h := l.wrap(func(http.ResponseWriter, *http.Request) {})
			reqs := make([]*http.Request, ips)
			for i := range reqs {
				reqs[i] = httptest.NewRequest(http.MethodPost, "/token", nil)
				reqs[i].RemoteAddr = fmt.Sprintf("10.0.%d.%d:1234", i>>8, i&255)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1))
				w := httptest.NewRecorder()
				for pb.Next() {
					h(w, reqs[i%ips])
					i++
				}
			})
		})
	}
}
