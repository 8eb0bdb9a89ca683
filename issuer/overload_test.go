package issuer

import (
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	rtmetrics "runtime/metrics"
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	buckets := []float64{math.Inf(-1), 0, 0.001, 0.01, 0.1, math.Inf(1)}
	for _, c := range []struct {
		counts []uint64
		q      float64
		want   float64
	}{
		{[]uint64{0, 90, 10, 0, 0}, 0.9, 0},
		{[]uint64{0, 89, 11, 0, 0}, 0.9, 0.001},
		{[]uint64{0, 0, 0, 0, 5}, 0.9, 0.1},
		{[]uint64{3, 0, 0, 0, 0}, 0.5, 0}, // -Inf lower bound reads as 0
		{[]uint64{0, 50, 0, 50, 0}, 0.5, 0},
		{[]uint64{0, 50, 0, 50, 0}, 0.51, 0.01},
	} {
		var n uint64
		for _, x := range c.counts {
			n += x
		}
		if got := quantile(c.counts, buckets, n, c.q); got != c.want {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.counts, c.q, got, c.want)
		}
	}
}

// TestOverloadGateSteers: the shed fraction climbs while admitted requests have
// waited longer than the target, up to shedMax, and comes back down once they
// stop waiting.
func TestOverloadGateSteers(t *testing.T) {
	g := newOverloadGate(20 * time.Millisecond)
	g.read = func() *rtmetrics.Float64Histogram { return nil } // the queue-age signal alone
	now := time.Now()
	g.tick(now)
	if g.shed.Load() != 0 || g.refuse() {
		t.Fatal("sheds with no signal")
	}
	for i := 1; i <= 3; i++ {
		g.observe(30 * time.Millisecond)
		g.observe(25 * time.Millisecond)
		g.tick(now)
		if got := g.shed.Load(); got != int32(i*shedUp) {
			t.Fatalf("tick %d: shed %d, want %d", i, got, i*shedUp)
		}
	}
	// One request that did not wait shows there is no standing queue.
	g.observe(40 * time.Millisecond)
	g.observe(time.Millisecond)
	g.tick(now)
	if got := g.shed.Load(); got != 3*shedUp-shedDown {
		t.Fatalf("after a fast request: shed %d", got)
	}
	for range 100 {
		g.observe(time.Second)
		g.tick(now)
	}
	if got := g.shed.Load(); got != shedMax {
		t.Fatalf("shed %d after a long overload, want the cap %d", got, shedMax)
	}
	refused := 0
	for range 10_000 {
		if g.refuse() {
			refused++
		}
	}
	if refused < 9_700 || refused == 10_000 {
		t.Fatalf("refused %d of 10000 at shed %d/%d", refused, shedMax, shedScale)
	}
	for range 100 {
		g.tick(now) // no requests at all: nothing queued
	}
	if g.shed.Load() != 0 || g.refuse() {
		t.Fatal("still shedding after the queue went away")
	}
}

// TestOverloadGateSchedDelay: the runtime's scheduling delay alone also steers.
func TestOverloadGateSchedDelay(t *testing.T) {
	g := newOverloadGate(20 * time.Millisecond)
	buckets := []float64{0, 0.001, 0.05, math.Inf(1)}
	counts := []uint64{0, 0, 0}
	g.read = func() *rtmetrics.Float64Histogram {
		return &rtmetrics.Float64Histogram{Counts: append([]uint64(nil), counts...), Buckets: buckets}
	}
	g.tick(time.Now()) // baseline
	counts[2] += 100   // 100 goroutines waited 50 ms or more
	g.tick(time.Now())
	if g.shed.Load() != shedUp {
		t.Fatalf("shed %d after a slow interval", g.shed.Load())
	}
	counts[0] += 1000 // fast again
	g.tick(time.Now())
	if g.shed.Load() != shedUp-shedDown {
		t.Fatalf("shed %d after a fast interval", g.shed.Load())
	}
	counts[2] += 10 // too few events to judge
	g.tick(time.Now())
	if g.shed.Load() != shedUp-2*shedDown {
		t.Fatalf("shed %d after an interval with few events", g.shed.Load())
	}
}

// TestKernelQueueAge reads the age of data waiting on a real loopback socket.
func TestKernelQueueAge(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("POST /token HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(120 * time.Millisecond)
	buf := make([]byte, 64)
	if _, err := s.Read(buf); err != nil {
		t.Fatal(err)
	}
	age, ok := kernelQueueAge(s.(*net.TCPConn))
	if !ok || age < 80*time.Millisecond || age > 5*time.Second {
		t.Fatalf("age %v (ok %v), want about 120ms", age, ok)
	}
}

// TestOverloadShedsEndToEnd: a gate that sheds answers /token with 429 and
// counts it by reason; shedding off lets requests through.
func TestOverloadShedsEndToEnd(t *testing.T) {
	m := newMetrics()
	l := newTokenLimits(Limits{}, nil, m)
	defer l.close()
	if l.gate == nil {
		t.Fatal("shedding is off by default")
	}
	l.gate.close() // steer by hand
	h := l.wrap(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	l.gate.shed.Store(shedMax)
	limited := 0
	for range 200 {
		w := httptest.NewRecorder()
		h(w, httptest.NewRequest(http.MethodPost, "/token", nil))
		if w.Code == http.StatusTooManyRequests {
			limited++
			if w.Header().Get("Retry-After") != "1" {
				t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
			}
		}
	}
	if limited < 180 {
		t.Fatalf("%d of 200 shed at the cap", limited)
	}
	if got := rateLimitedCount(t, m, limitedOverload); got != float64(limited) {
		t.Fatalf("overload counter %v, want %d", got, limited)
	}
	l.gate.shed.Store(0)
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest(http.MethodPost, "/token", nil))
	if w.Code != 200 {
		t.Fatalf("not shedding: %d", w.Code)
	}

	off := newTokenLimits(Limits{ShedQueueDelay: -time.Second}, nil, newMetrics())
	if off.gate != nil {
		t.Fatal("a negative shed_queue_delay does not turn shedding off")
	}
}

// TestServeObservesQueueAge: Serve hands the handler the accepted TCP connection
// under TLS, so the gate reads each /token request's kernel queue age.
func TestServeObservesQueueAge(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	ts := startSTS(t, stsOptions{})
	g := ts.srv.limits.gate
	g.close() // no ticks: the observation stays until read here
	addr := ts.serve(t)
	if g.minAge.Load() != math.MaxInt64 {
		t.Fatal("an age was observed before any request")
	}
	resp, err := ts.client.PostForm("https://"+addr+PathToken, ts.form(ts.a.Token(t, payments)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if age := g.minAge.Load(); age == math.MaxInt64 || age < 0 || age > int64(5*time.Second) {
		t.Fatalf("queue age %d ns after a request over Serve, want an observation", age)
	}
}
