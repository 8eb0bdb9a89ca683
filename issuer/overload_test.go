package issuer

import (
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
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

// gateSim drives a gate tick by tick with injected signals: the process's CPU
// use (a fraction of what it may use), the queue ages of the requests it saw and
// the scheduling delay histogram.
type gateSim struct {
	g     *overloadGate
	now   time.Time
	used  time.Duration
	cores float64
	// sched is the cumulative scheduling latency histogram (counts per bucket of
	// schedBuckets).
	sched []uint64
}

var schedBuckets = []float64{0, 0.001, 0.05, math.Inf(1)}

func newGateSim(target time.Duration, cores float64) *gateSim {
	s := &gateSim{g: newOverloadGate(target), now: time.Unix(1_000_000, 0), cores: cores, sched: make([]uint64, 3)}
	s.g.read = func() *rtmetrics.Float64Histogram {
		return &rtmetrics.Float64Histogram{Counts: slices.Clone(s.sched), Buckets: schedBuckets}
	}
	s.g.cpuTime = func() (time.Duration, bool) { return s.used, true }
	s.g.cpuLimit = func() (float64, time.Duration) { return s.cores, 0 }
	s.g.tick(s.now) // the first samples
	return s
}

// step is one interval in which the process used cpu of what it may use and saw
// requests that had waited ages; it returns the shed fraction after the tick.
func (s *gateSim) step(cpu float64, ages ...time.Duration) float64 {
	for _, a := range ages {
		s.g.observe(a)
	}
	s.now = s.now.Add(overloadInterval)
	s.used += time.Duration(cpu * s.cores * float64(overloadInterval))
	s.g.tick(s.now)
	return float64(s.g.shed.Load()) / shedScale
}

// TestOverloadGateSpareCPU: while the process uses less than cpuBusy of the CPU
// it may use, the gate sheds nothing, however long requests waited and however
// late goroutines ran (busy neighbours delay both), and a gate that was shedding
// stops within a few intervals.
func TestOverloadGateSpareCPU(t *testing.T) {
	for _, cores := range []float64{0.5, 1, 2} {
		s := newGateSim(50*time.Millisecond, cores)
		for i := range 200 {
			s.sched[2] += 1000 // goroutines waited 50 ms or more
			if shed := s.step(0.6, 300*time.Millisecond, 400*time.Millisecond); shed != 0 {
				t.Fatalf("%v cores, 60%% used, tick %d: shed %v", cores, i, shed)
			}
		}
		s.g.shed.Store(shedMax)
		n := 0
		for s.g.shed.Load() > 0 {
			if n++; n > 10 {
				t.Fatalf("%v cores: shed %v after %d intervals with CPU to spare", cores, float64(s.g.shed.Load())/shedScale, n)
			}
			s.sched[2] += 1000
			s.step(0.7, 300*time.Millisecond)
		}
	}
}

// TestOverloadGateSaturated: with the CPU busy and requests waiting over the
// target, the shed fraction climbs in proportion to the excess wait; while the
// wait falls fast (the queue drains) it holds; never beyond shedMax.
func TestOverloadGateSaturated(t *testing.T) {
	s := newGateSim(50*time.Millisecond, 1)
	for i := range 5 {
		if shed := s.step(1, 40*time.Millisecond); shed != 0 {
			t.Fatalf("tick %d: shed %v with a wait under the target", i, shed)
		}
	}
	prev := 0.0
	for i := range 4 {
		shed := s.step(1, 150*time.Millisecond)
		if shed <= prev {
			t.Fatalf("tick %d: shed %v, was %v, with requests waiting 3x the target", i, shed, prev)
		}
		prev = shed
	}
	if prev < 0.6 || prev > 0.75 {
		t.Fatalf("shed %v after 4 intervals at 3x the target, want 1-0.75^4", prev)
	}
	// A small excess moves it less.
	small := newGateSim(50*time.Millisecond, 1)
	if shed := small.step(1, 55*time.Millisecond); shed <= 0 || shed > 0.03 {
		t.Fatalf("shed %v for a wait 10%% over the target", shed)
	}
	// Draining: the wait falls by more than a quarter of an interval per interval.
	for i, age := range []time.Duration{140, 125, 110, 95, 80} {
		if shed := s.step(1, age*time.Millisecond); shed != prev {
			t.Fatalf("draining, tick %d: shed %v, was %v", i, shed, prev)
		}
	}
	for range 200 {
		s.step(1, time.Second)
	}
	if got := s.g.shed.Load(); got != shedMax {
		t.Fatalf("shed %d after a long overload, want the cap %d", got, shedMax)
	}
	refused := 0
	for range 10_000 {
		if s.g.refuse() {
			refused++
		}
	}
	if refused < 9_700 || refused == 10_000 {
		t.Fatalf("refused %d of 10000 at shed %d/%d", refused, shedMax, shedScale)
	}
	// At capacity without a queue it eases off, slowly.
	before := s.g.shed.Load()
	s.step(1, time.Millisecond)
	if got := s.g.shed.Load(); got >= before || got < before*9/10 {
		t.Fatalf("at capacity without a queue: shed %d, was %d", got, before)
	}
}

// TestOverloadGateMedianAge: the wait is the median age of the interval's
// requests, not the smallest: the Go runtime does not read connections in
// arrival order, so a few requests read at once say nothing of the others.
func TestOverloadGateMedianAge(t *testing.T) {
	s := newGateSim(50*time.Millisecond, 1)
	ages := []time.Duration{time.Millisecond, 2 * time.Millisecond, time.Millisecond}
	for range 7 {
		ages = append(ages, 200*time.Millisecond)
	}
	if shed := s.step(1, ages...); shed == 0 {
		t.Fatal("no shedding while most requests waited 4x the target")
	}
	was := s.g.shed.Load()
	if s.step(1, ages[:5]...); s.g.shed.Load() >= was {
		t.Fatalf("shed %d, was %d, while most requests did not wait", s.g.shed.Load(), was)
	}
	// The age's resolution is an eighth of the target.
	s.g.observe(56 * time.Millisecond)
	s.g.observe(60 * time.Millisecond)
	s.g.observe(3 * time.Second)
	if age, ok := s.g.medianAge(); !ok || math.Abs(age-0.059375) > 1e-9 {
		t.Fatalf("median %v (%v), want the middle of [56.25, 62.5) ms", age, ok)
	}
}

// TestOverloadGateRecovers: once the overload is over (the CPU has room again
// and requests do not wait) the gate sheds nothing within a few intervals.
func TestOverloadGateRecovers(t *testing.T) {
	s := newGateSim(50*time.Millisecond, 1)
	for range 100 {
		s.step(1, time.Second)
	}
	if s.g.shed.Load() != shedMax {
		t.Fatalf("shed %d", s.g.shed.Load())
	}
	// The CPU use is averaged over a few intervals: the first after the overload
	// still look busy.
	for i := range 10 {
		if s.step(0.1, time.Millisecond) == 0 {
			if i > 8 {
				t.Fatalf("back to 0 after %d intervals", i+1)
			}
			return
		}
	}
	t.Fatalf("still shedding %v 10 intervals after the overload", float64(s.g.shed.Load())/shedScale)
}

// TestOverloadGateSchedDelay: without queue ages (no TCP_INFO, or no request),
// the runtime's scheduling delay is the wait signal.
func TestOverloadGateSchedDelay(t *testing.T) {
	s := newGateSim(20*time.Millisecond, 1)
	s.sched[2] += 100 // 100 goroutines waited 50 ms or more
	if shed := s.step(1); shed == 0 {
		t.Fatal("no shedding after a slow interval")
	}
	was := s.g.shed.Load()
	s.sched[2] += 10 // too few events to judge
	if s.step(1); s.g.shed.Load() >= was {
		t.Fatalf("shed %d after an interval with few events, was %d", s.g.shed.Load(), was)
	}
	s.sched[0] += 1000 // fast
	if s.step(1); s.g.shed.Load() >= was {
		t.Fatalf("shed %d after a fast interval, was %d", s.g.shed.Load(), was)
	}
	// Queue ages, when there are any, take precedence.
	s.sched[2] += 1000
	was = s.g.shed.Load()
	if s.step(1, time.Millisecond); s.g.shed.Load() >= was {
		t.Fatalf("shed %d with fast requests and a slow scheduler, was %d", s.g.shed.Load(), was)
	}
	// Without a CPU reading the wait signals alone steer.
	s.g.cpuTime = func() (time.Duration, bool) { return 0, false }
	s.sched[2] += 1000
	was = s.g.shed.Load()
	if s.step(0.1); s.g.shed.Load() <= was {
		t.Fatalf("shed %d without a CPU reading and a slow scheduler, was %d", s.g.shed.Load(), was)
	}
}

// TestOverloadGateCPUWindow: the CPU use is averaged over two quota periods (a
// 100 ms CFS period lets a process at its quota run in bursts), so a gate under
// such a quota does not see spare CPU in the gaps.
func TestOverloadGateCPUWindow(t *testing.T) {
	s := newGateSim(50*time.Millisecond, 0.5)
	s.g.cpuLimit = func() (float64, time.Duration) { return 0.5, 100 * time.Millisecond }
	s.g.limitAt = time.Time{} // read the limit with its period again
	// Each 100 ms: the quota's 50 ms in two intervals, then two throttled.
	for i := range 80 {
		cpu := 0.0
		if i%4 < 2 {
			cpu = 2
		}
		shed := s.step(cpu, 200*time.Millisecond)
		if i == 79 && shed < 0.5 {
			t.Fatalf("shed %v at the quota with a standing queue", shed)
		}
	}
	if s.g.window != 8 {
		t.Fatalf("window %d intervals, want 8", s.g.window)
	}
}

// TestOverloadGoodput simulates a server that reads requests in arrival order,
// spending a CPU budget per interval on them: an exchange costs 1/capacity, a
// refusal a fraction of that. Offered three times its capacity, the gate must
// keep the admitted rate near the best possible and the wait short.
func TestOverloadGoodput(t *testing.T) {
	for _, refusal := range []float64{0.05, 0.1} {
		t.Run(fmt.Sprint(refusal), func(t *testing.T) { simulateOverload(t, refusal) })
	}
}

func simulateOverload(t *testing.T, refusal float64) {
	const (
		capacity = 2000.0 // exchanges per second of CPU
		offered  = 3 * capacity
	)
	// The best: every request read, as many admitted as the CPU left by the
	// refusals allows (a + refusal x (offered - a) = capacity).
	best := (capacity - refusal*offered) / (1 - refusal) / capacity
	s := newGateSim(50*time.Millisecond, 1)
	var queue []time.Time // arrival times of requests not read yet
	var arrived float64
	admitted, maxAge := 0, time.Duration(0)
	dt := overloadInterval.Seconds()
	for tick := range 800 {
		for arrived += offered * dt; arrived >= 1; arrived-- {
			queue = append(queue, s.now.Add(time.Duration(rand.Int64N(int64(overloadInterval)))))
		}
		budget := dt
		for len(queue) > 0 && budget > 0 {
			age := s.now.Sub(queue[0])
			queue = queue[1:]
			s.g.observe(max(0, age))
			if s.g.refuse() {
				budget -= refusal / capacity
				continue
			}
			budget -= 1 / capacity
			if tick >= 200 {
				admitted++
				maxAge = max(maxAge, age)
			}
		}
		s.step((dt - max(0, budget)) / dt)
	}
	goodput := float64(admitted) / (600 * dt) / capacity
	t.Logf("refusal %.0f%% of an exchange: goodput %.0f%% of capacity (best %.0f%%), max wait %v, shed %v",
		refusal*100, goodput*100, best*100, maxAge, float64(s.g.shed.Load())/shedScale)
	if goodput < 0.95*best {
		t.Errorf("goodput %.0f%% of capacity at 3x, the best is %.0f%%", goodput*100, best*100)
	}
	if maxAge > 250*time.Millisecond {
		t.Errorf("an admitted request waited %v", maxAge)
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
	if _, ok := g.medianAge(); ok {
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
	if age, ok := g.medianAge(); !ok || age > 0.5 {
		t.Fatalf("queue age %v s (%v) after a request over Serve, want an observation", age, ok)
	}
}

// nopWriter is a ResponseWriter that keeps nothing but its header map, reused.
type nopWriter struct {
	h      http.Header
	status int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) WriteHeader(status int)      { w.status = status }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestShedAllocs: refusing a request costs as little as possible: the shed and
// in-flight 429s are encoded once and written without an allocation.
func TestShedAllocs(t *testing.T) {
	l := newTokenLimits(Limits{}, nil, newMetrics())
	l.close()
	h := l.wrap(func(http.ResponseWriter, *http.Request) { t.Fatal("admitted") })
	r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("grant_type=x"))
	w := &nopWriter{h: http.Header{}}
	l.gate.shed.Store(shedScale) // refuse everything
	if n := testing.AllocsPerRun(1000, func() { h(w, r) }); n != 0 || w.status != http.StatusTooManyRequests {
		t.Fatalf("gate refusal: %v allocations, status %d", n, w.status)
	}
	l.gate.shed.Store(0)
	l.inFlight.Store(l.maxInFlight)
	// The in-flight bound counts a request once its body is in (a slow body takes
	// no slot), so the read is not the refusal's: measure it without a body.
	r = httptest.NewRequest(http.MethodPost, "/token", nil)
	if n := testing.AllocsPerRun(1000, func() { h(w, r) }); n != 0 || w.status != http.StatusTooManyRequests {
		t.Fatalf("in-flight refusal: %v allocations, status %d", n, w.status)
	}
}

// TestShedResponse: the pre-encoded 429 is the one writeRateLimited writes, with
// its length.
func TestShedResponse(t *testing.T) {
	want := httptest.NewRecorder()
	writeRateLimited(want, time.Second)
	got := httptest.NewRecorder()
	shedResponse.writeTo(got)
	if got.Code != want.Code || got.Body.String() != want.Body.String() {
		t.Fatalf("got %d %q, want %d %q", got.Code, got.Body, want.Code, want.Body)
	}
	want.Header().Set("Content-Length", strconv.Itoa(want.Body.Len()))
	if !maps.EqualFunc(got.Header(), want.Header(), slices.Equal) {
		t.Fatalf("header %v, want %v", got.Header(), want.Header())
	}
	// Header values are shared: adding to one response must not change the next.
	got.Header().Add("Retry-After", "2")
	again := httptest.NewRecorder()
	shedResponse.writeTo(again)
	if v := again.Header().Values("Retry-After"); len(v) != 1 || v[0] != "1" {
		t.Fatalf("Retry-After %q after another response added to it", v)
	}
}

// BenchmarkShed is the in-process cost of a refusal through the server's handler
// (routing, request counting, the limits, the 429), to compare with
// BenchmarkExchange; HTTP parsing and TLS are not included (scripts/overload.sh
// estimates the whole). The refused request is not read, so one is reused.
func BenchmarkShed(b *testing.B) {
	ts := startSTSForBench(b)
	ts.srv.limits.gate.close()
	ts.srv.limits.gate.shed.Store(shedScale)
	req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(ts.form(ts.a.Token(b, payments)).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := &nopWriter{h: http.Header{}}
	h := ts.srv.Handler()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
	if w.status != http.StatusTooManyRequests {
		b.Fatalf("status %d", w.status)
	}
}

// TestOverloadGateMultiplexed: HTTP/2 requests wait in the process, not in the
// kernel (their connection's last data is always fresh): while they come and
// the CPU is busy, the scheduling delay steers the gate even though their
// queue ages are short; HTTP/1.1 requests with the same short ages do not.
func TestOverloadGateMultiplexed(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		s := newGateSim(20*time.Millisecond, 1)
		var shed float64
		for range 40 {
			s.sched[2] += 1000 // goroutines waited 50 ms or more
			if h2 {
				s.g.observeMultiplexed()
			}
			shed = s.step(1, time.Millisecond, 2*time.Millisecond)
		}
		if h2 && shed == 0 {
			t.Error("HTTP/2 requests queued in the process on a busy CPU: nothing shed")
		}
		if !h2 && shed != 0 {
			t.Errorf("HTTP/1.1 requests served on arrival: shed %v", shed)
		}
	}
}

// TestOverloadGateSamplesAges: at most maxAgeSamples queue ages are read per
// interval (each is a system call), and the next interval reads again.
func TestOverloadGateSamplesAges(t *testing.T) {
	g := newOverloadGate(50 * time.Millisecond)
	for i := range 3 * maxAgeSamples {
		if got, want := g.wantAge(), i < maxAgeSamples; got != want {
			t.Fatalf("request %d: wantAge %v, want %v", i, got, want)
		}
	}
	g.medianAge() // the tick
	if !g.wantAge() {
		t.Fatal("no age read in the next interval")
	}
}
