package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
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
	l := newKeyLimiter[netip.Addr](1, 2, 1000, clk.now)
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
	l := newKeyLimiter[netip.Addr](1, 1, maxKeys, clk.now)
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
		if got := (&tokenLimits{}).clientAddr(r).String(); got != want {
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
	l := newTokenLimits(Limits{PerIPRPS: 0.5, Burst: 1}, clk.now, m)
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
	l := newTokenLimits(Limits{MaxInFlight: n}, nil, m)
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
	c := Limits{PerIPRPS: 200}.withDefaults()
	if c.Burst != 400 || c.MaxInFlight <= 0 {
		t.Fatalf("defaults %+v", c)
	}
	if c := (Limits{PerIPRPS: 0.1}).withDefaults(); c.Burst != 1 {
		t.Fatalf("burst for a slow rate %d, want 1", c.Burst)
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
	metricsText := ts.metrics(t)
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
			l := newTokenLimits(Limits{PerIPRPS: 1e9, Burst: 1e9, MaxInFlight: 1 << 30}, nil, newMetrics())
			benchPeers(b, ips, l.wrap(func(http.ResponseWriter, *http.Request) {}))
		})
	}
}

// benchPeers runs h in parallel on /token requests from n client addresses.
func benchPeers(b *testing.B, n int, h http.HandlerFunc) {
	reqs := make([]*http.Request, n)
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
			h(w, reqs[i%n])
			i++
		}
	})
}

func TestClientAddrTrustedProxies(t *testing.T) {
	l := newTokenLimits(Limits{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"}}, nil, newMetrics())
	cases := []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"direct client: header ignored", "198.51.100.7:1", []string{"203.0.113.9"}, "198.51.100.7"},
		{"trusted proxy: nearest hop", "10.1.2.3:1", []string{"203.0.113.9"}, "203.0.113.9"},
		{"client-written part is skipped", "10.1.2.3:1", []string{"6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"chain of trusted proxies", "10.1.2.3:1", []string{"203.0.113.9, 192.0.2.1", "10.9.9.9"}, "203.0.113.9"},
		{"spoofed trusted address on the left", "10.1.2.3:1", []string{"10.0.0.1, 203.0.113.9"}, "203.0.113.9"},
		{"no header: the proxy", "10.1.2.3:1", nil, "10.1.2.3"},
		{"garbage hop: last trusted", "10.1.2.3:1", []string{"not-an-ip"}, "10.1.2.3"},
		{"all trusted: leftmost", "10.1.2.3:1", []string{"10.0.0.5"}, "10.0.0.5"},
		{"IPv6 client by /64", "[2001:db8::5]:1", []string{"2001:db9:1:2:3:4:5:6"}, "2001:db9:1:2::"},
		{"mapped IPv4 peer", "[::ffff:10.1.2.3]:1", []string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/token", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := l.clientAddr(r).String(); got != c.want {
				t.Fatalf("key %s, want %s", got, c.want)
			}
		})
	}
	// A long header is read only up to maxForwardedHops from the right.
	r := httptest.NewRequest(http.MethodPost, "/token", nil)
	r.RemoteAddr = "10.1.2.3:1"
	r.Header.Set("X-Forwarded-For", "203.0.113.9"+strings.Repeat(", 10.0.0.1", 2*maxForwardedHops))
	if got := l.clientAddr(r).String(); got != "10.0.0.1" {
		t.Fatalf("long chain: key %s", got)
	}
}

// TestPerWorkloadAndClientLimits: once verified, a workload (and an
// authenticated client) is held to its own bucket; others are not affected.
func TestPerWorkloadAndClientLimits(t *testing.T) {
	ci := testissuer.New(t, "ci-runner")
	ts := startSTS(t, stsOptions{
		extra: "limits: {per_workload_rps: 0.01, workload_burst: 2, per_client_rps: 0.01, client_burst: 1}\n" +
			"clients:\n  - {id: ci-runner, jwks_file: ci.jwks}\n",
		files: map[string]string{"ci.jwks": string(ci.JWKS())},
	})
	for i := range 2 {
		if r := ts.post(t, ts.form(ts.a.Token(t, payments))); r.status != 200 {
			t.Fatalf("exchange %d: %d %s", i, r.status, r.raw)
		}
	}
	r := ts.post(t, ts.form(ts.a.Token(t, payments)))
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || r.body["error"] != codeTemporarilyUnavailable {
		t.Fatalf("third exchange of one workload: %d %v %s", r.status, r.header, r.raw)
	}
	if !strings.Contains(ts.audit.String(), "rate limited: per workload") {
		t.Fatal("audit does not record the workload limit")
	}
	// The same subject from another upstream is another workload.
	if r := ts.post(t, ts.form(ts.b.Token(t, payments))); r.status != 200 {
		t.Fatalf("other upstream: %d %s", r.status, r.raw)
	}
	if r := ts.post(t, ts.form(ts.a.Token(t, "system:serviceaccount:payments:other"))); r.status != 200 {
		t.Fatalf("other workload: %d %s", r.status, r.raw)
	}

	// An authenticated client has a bucket of one.
	other := "system:serviceaccount:payments:c"
	if r := ts.post(t, withAssertion(ts.form(ts.a.Token(t, other)), assertion(t, ts, ci))); r.status != 200 {
		t.Fatalf("client, first: %d %s", r.status, r.raw)
	}
	r = ts.post(t, withAssertion(ts.form(ts.a.Token(t, other+"2")), assertion(t, ts, ci)))
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("client, second: %d %s", r.status, r.raw)
	}
	metricsText := ts.metrics(t)
	for _, want := range []string{
		`safeconduct_rate_limited_total{reason="per_workload"} 1`,
		`safeconduct_rate_limited_total{reason="per_client"} 1`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// FuzzClientAddr: X-Forwarded-For from a trusted proxy is untrusted text. The key
// is always a valid address (or the zero Addr for an unparsable peer), never one
// of the trusted proxies unless every hop read is one, and reading stops within
// maxForwardedHops.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.9", "6.6.6.6, 203.0.113.9", "10.0.0.1,10.0.0.2", "not-an-ip", "", ",,,", "::1, [::1]", "2001:db8::1%eth0"} {
		f.Add("10.1.2.3:1", s)
	}
	f.Add("garbage", "1.2.3.4")
	l := newTokenLimits(Limits{TrustedProxies: []string{"10.0.0.0/8", "2001:db8::/32"}}, nil, newMetrics())
	defer l.close()
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest(http.MethodPost, "/token", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", xff)
		a := l.clientAddr(r)
		peer, err := netip.ParseAddrPort(remote)
		if err != nil {
			if a.IsValid() {
				t.Fatalf("unparsable peer %q gave key %v", remote, a)
			}
			return
		}
		if !a.IsValid() {
			t.Fatalf("peer %q, XFF %q: invalid key", remote, xff)
		}
		if !l.trusted(peer.Addr().Unmap()) && a != (&tokenLimits{}).clientAddr(r) {
			t.Fatalf("untrusted peer %q: XFF %q was believed (%v)", remote, xff, a)
		}
	})
}

// TestReadBodyAhead: the body read before the in-flight slot reaches the handler
// whole, with the read's error after it, sized or not by Content-Length, and the
// token handler takes its bytes without a second read.
func TestReadBodyAhead(t *testing.T) {
	l := newTokenLimits(Limits{}, nil, newMetrics())
	defer l.close()
	big := strings.Repeat("a", maxBodyBytes+10)
	for _, c := range []struct {
		name, body string
		chunked    bool
		tooLarge   bool
	}{
		{"sized", "grant_type=x&subject_token=y", false, false},
		{"chunked", "grant_type=x&subject_token=y", true, false},
		{"empty", "", false, false},
		{"too large", big, false, true},
		{"too large chunked", big, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(c.body))
			if c.chunked {
				r.ContentLength = -1
			}
			var got []byte
			var gotErr error
			h := l.wrap(func(_ http.ResponseWriter, r *http.Request) { got, gotErr = readAllBody(r) })
			h(httptest.NewRecorder(), r)
			var mbe *http.MaxBytesError
			switch {
			case c.tooLarge && !errors.As(gotErr, &mbe):
				t.Fatalf("error %v, want a MaxBytesError", gotErr)
			case c.tooLarge && len(got) != maxBodyBytes:
				t.Fatalf("read %d bytes before the limit, want %d", len(got), maxBodyBytes)
			case !c.tooLarge && (gotErr != nil || string(got) != c.body):
				t.Fatalf("got %q, %v", got, gotErr)
			}
			// A handler reading the body like the connection sees the same.
			r = httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(c.body))
			l.wrap(func(_ http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if (err != nil) != c.tooLarge || (!c.tooLarge && string(b) != c.body) {
					t.Errorf("io.ReadAll: %d bytes, %v", len(b), err)
				}
			})(httptest.NewRecorder(), r)
		})
	}
}
