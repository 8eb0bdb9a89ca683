package issuer

import (
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Overload shedding. max_in_flight counts requests inside the handler, but when
// the CPU is saturated the queue forms before it: requests wait in socket
// buffers and run queues for a CPU to read them, and every one of them will be
// served, late. Every overloadInterval the gate reads
//
//   - the process's own CPU use (CPU time over the last few intervals) against
//     what it may use: GOMAXPROCS, the CPUs it may run on and the cgroup CPU
//     quota (cpu.max, or cpu.cfs_quota_us under cgroup v1), whichever is least;
//   - how long the requests it sees have been waiting: on Linux, TCP_INFO's
//     last_data_recv of the connection when the handler starts (the client sent
//     its request and nothing since), the median over the interval (the Go
//     runtime does not serve connections in arrival order, so the freshest
//     request says little of the others); elsewhere, or when no request came,
//     how long goroutines waited runnable for a CPU (runtime/metrics
//     /sched/latencies:seconds, 90th percentile over the interval); when
//     HTTP/2 requests came, the larger of the two (their requests wait in the
//     process, not in the kernel).
//
// It steers the fraction of /token requests refused at once with a pre-encoded
// 429 (which costs a small fraction of an exchange):
//
//   - while the process uses less than cpuBusy of what it may use, it has CPU to
//     spare: whatever the requests waited for, it was not this process's CPU
//     (busy neighbours delay its threads too), so the gate admits more, in
//     proportion to the spare CPU, and is back to shedding nothing within a few
//     intervals;
//   - while the CPU is busy and requests wait longer than the target, the
//     admitted fraction goes down in proportion to the excess wait, unless the
//     wait is already falling fast (the queue is draining: more shedding would
//     overshoot);
//   - at capacity without such a queue, the shed fraction eases off slowly, to
//     find the most the process can serve on time.
//
// A busy CPU alone is not a reason to shed: a server at capacity without a queue
// serves everyone on time.

const (
	schedLatencyMetric = "/sched/latencies:seconds"
	overloadInterval   = 25 * time.Millisecond
	// defaultQueueDelay is the wait above which the gate sheds.
	defaultQueueDelay = 20 * time.Millisecond
	// overloadMinSamples: fewer scheduling events in an interval say nothing.
	overloadMinSamples = 50
	// cpuBusy is the fraction of the CPU the process may use below which it has
	// CPU to spare and the gate does not shed.
	cpuBusy = 0.85
	// The CPU use is averaged over at least cpuWindowMin intervals and two cgroup
	// quota periods (a quota is enforced per period), at most cpuWindowMax.
	cpuWindowMin = 4
	cpuWindowMax = 40
	// cpuLimitRefresh: how often the CPU the process may use is read again (a
	// cgroup's quota can change, the process can be moved).
	cpuLimitRefresh = time.Second
)

// The shed fraction, in 1/shedScale, and how it moves per interval.
const (
	shedScale = 1_000_000
	shedMax   = 990_000 // always admit some, to keep measuring
	// shedFloor: a fraction falling below it is 0.
	shedFloor = 5_000
	// shedGain: the admitted fraction falls by up to this part of itself while
	// the CPU is busy and the wait is over the target (in full at twice the target).
	shedGain = 0.25
	// shedEase: the shed fraction falls by this part of itself at capacity
	// without a queue.
	shedEase = 0.05
	// drainRate: a wait falling by this part of an interval per interval is a
	// queue draining.
	drainRate = 0.25
)

// Queue ages are counted per interval in ageBuckets buckets of 1/ageResolution
// of the target each; the last holds everything from its lower bound up.
const (
	ageResolution = 8
	ageBuckets    = 4*ageResolution + 1
)

// overloadGate sheds /token requests while the process is CPU-saturated and
// requests queue for it.
type overloadGate struct {
	target float64 // queue delay mark, seconds
	// shed is the fraction of requests to refuse, in 1/shedScale.
	shed atomic.Int32

	// read returns the cumulative scheduling latency histogram; cpuTime the
	// process's CPU time so far; cpuLimit the cores it may use and the period of
	// its cgroup quota (0: none). Tests replace them.
	read     func() *rtmetrics.Float64Histogram
	cpuTime  func() (time.Duration, bool)
	cpuLimit func() (cores float64, period time.Duration)

	// Tick state (the sampling goroutine only).
	prev, delta []uint64
	cores       float64
	window      int // intervals the CPU use is averaged over
	limitAt     time.Time
	cpu         [cpuWindowMax + 1]cpuSample // ring, by tick
	ticks       int
	lastDelay   float64

	// ages counts the kernel queue ages seen since the last tick, by bucket;
	// sampled, the requests that asked whether to read one (wantAge).
	ages    [ageBuckets]atomic.Uint32
	sampled atomic.Int32
	// multiplexed: an HTTP/2 request came since the last tick. Its connection's
	// last_data_recv says nothing of its wait (other streams keep the
	// connection busy), and it waits inside the process, for the goroutines
	// that read its frames and run its handler: the scheduling latency says it.
	multiplexed atomic.Bool

	stop chan struct{}
	once sync.Once
}

type cpuSample struct {
	at   time.Time
	used time.Duration
}

func newOverloadGate(target time.Duration) *overloadGate {
	if target <= 0 {
		target = defaultQueueDelay
	}
	sample := []rtmetrics.Sample{{Name: schedLatencyMetric}}
	g := &overloadGate{
		target: target.Seconds(),
		read: func() *rtmetrics.Float64Histogram {
			rtmetrics.Read(sample)
			if sample[0].Value.Kind() != rtmetrics.KindFloat64Histogram {
				return nil
			}
			return sample[0].Value.Float64Histogram()
		},
		cpuTime:  processCPUTime,
		cpuLimit: processCPULimit,
		stop:     make(chan struct{}),
	}
	return g
}

// processCPULimit is how many cores the process may use: GOMAXPROCS, the CPUs it
// may run on and its cgroup's CPU quota, whichever is least.
func processCPULimit() (float64, time.Duration) {
	cores := float64(min(runtime.GOMAXPROCS(0), runtime.NumCPU()))
	if quota, period := cgroupCPUQuota(); quota > 0 {
		return min(cores, quota), period
	}
	return cores, 0
}

// start samples until close.
func (g *overloadGate) start() {
	g.tick(time.Now())
	go func() {
		t := time.NewTicker(overloadInterval)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case now := <-t.C:
				g.tick(now)
			}
		}
	}()
}

func (g *overloadGate) close() { g.once.Do(func() { close(g.stop) }) }

// tick reads the signals and steers the shed fraction.
func (g *overloadGate) tick(now time.Time) {
	delay, haveDelay := g.schedDelay()
	if age, ok := g.medianAge(); ok {
		if !g.multiplexed.Swap(false) || !haveDelay || age > delay {
			delay = age
		}
		haveDelay = true
	}
	if !haveDelay {
		delay = 0
	}
	last := g.lastDelay
	g.lastDelay = delay
	use, knownUse := g.cpuUse(now)

	cur := g.shed.Load()
	shed := float64(cur) / shedScale
	admit := 1 - shed
	switch {
	case knownUse && use < cpuBusy:
		// CPU to spare: admit more, by the spare's proportion (at least a quarter
		// more, at most twice as many), and 5% of all.
		admit = admit*min(2, max(1.25, cpuBusy/use)) + 0.05
	case delay > g.target:
		if last-delay < drainRate*overloadInterval.Seconds() {
			admit *= 1 - shedGain*min(1, (delay-g.target)/g.target)
		}
	default:
		admit = 1 - shed*(1-shedEase)
	}
	next := int32(math.Round((1 - admit) * shedScale))
	if next < cur && next < shedFloor {
		next = 0
	}
	g.shed.Store(max(0, min(shedMax, next)))
}

// cpuUse is the fraction of the CPU the process may use that it used over the
// last window, once two samples are known.
func (g *overloadGate) cpuUse(now time.Time) (float64, bool) {
	if g.limitAt.IsZero() || now.Sub(g.limitAt) >= cpuLimitRefresh || now.Before(g.limitAt) {
		cores, period := g.cpuLimit()
		g.cores, g.limitAt = cores, now
		g.window = max(cpuWindowMin, min(cpuWindowMax, int(math.Ceil(float64(2*period)/float64(overloadInterval)))))
	}
	used, ok := g.cpuTime()
	if !ok || g.cores <= 0 {
		return 0, false
	}
	g.cpu[g.ticks%len(g.cpu)] = cpuSample{at: now, used: used}
	g.ticks++
	back := min(g.window, g.ticks-1)
	if back == 0 {
		return 0, false
	}
	old := g.cpu[(g.ticks-1-back)%len(g.cpu)]
	elapsed := now.Sub(old.at)
	if elapsed <= 0 {
		return 0, false
	}
	return float64(used-old.used) / float64(elapsed) / g.cores, true
}

// maxAgeSamples: the queue ages read per interval. A median needs no more, and
// each read is a system call that the refusals under overload would pay.
const maxAgeSamples = 32

// wantAge reports whether to read this request's queue age.
func (g *overloadGate) wantAge() bool { return g.sampled.Add(1) <= maxAgeSamples }

// observeMultiplexed records an HTTP/2 request (see multiplexed).
func (g *overloadGate) observeMultiplexed() { g.multiplexed.Store(true) }

// observe records the kernel queue age of a request.
func (g *overloadGate) observe(age time.Duration) {
	i := min(ageBuckets-1, max(0, int(age.Seconds()*ageResolution/g.target)))
	g.ages[i].Add(1)
}

// medianAge is the median of the ages observed since the last call, in seconds
// (the middle of its bucket), and resets the count.
func (g *overloadGate) medianAge() (float64, bool) {
	g.sampled.Store(0)
	var counts [ageBuckets]uint32
	var n uint32
	for i := range g.ages {
		counts[i] = g.ages[i].Swap(0)
		n += counts[i]
	}
	if n == 0 {
		return 0, false
	}
	var seen uint32
	for i, c := range counts {
		if seen += c; 2*seen >= n {
			return (float64(i) + 0.5) * g.target / ageResolution, true
		}
	}
	panic("unreachable")
}

// schedDelay is the 90th percentile of scheduling latency since the last call.
func (g *overloadGate) schedDelay() (float64, bool) {
	h := g.read()
	if h == nil {
		return 0, false
	}
	if len(g.prev) != len(h.Counts) {
		g.prev = make([]uint64, len(h.Counts))
		g.delta = make([]uint64, len(h.Counts))
		copy(g.prev, h.Counts)
		return 0, false
	}
	var n uint64
	for i, c := range h.Counts {
		g.delta[i] = c - g.prev[i]
		n += g.delta[i]
	}
	copy(g.prev, h.Counts)
	if n < overloadMinSamples {
		return 0, false
	}
	return quantile(g.delta, h.Buckets, n, 0.9), true
}

// refuse reports whether to shed this request.
func (g *overloadGate) refuse() bool {
	p := g.shed.Load()
	return p > 0 && rand.Int32N(shedScale) < p
}

// quantile is the lower bound of the bucket holding the q-th of n events
// (Buckets has one more element than counts).
func quantile(counts []uint64, buckets []float64, n uint64, q float64) float64 {
	rank := max(1, uint64(math.Ceil(q*float64(n))))
	var seen uint64
	for i, c := range counts {
		if seen += c; seen >= rank {
			if math.IsInf(buckets[i], -1) {
				return 0
			}
			return buckets[i]
		}
	}
	return buckets[len(buckets)-1]
}

// shedResponse is the 429 of the overload gate and of the in-flight bound
// (Retry-After: 1), encoded once: under overload it is the most frequent answer,
// and every microsecond it costs is taken from the admitted requests.
var shedResponse = encodeResponse(func(w http.ResponseWriter) { writeRateLimited(w, time.Second) })

// encodedResponse is a response recorded once and written many times. Its header
// values are shared by every response written: they must be replaced, never
// modified in place (http.Header's Set and Add do neither).
type encodedResponse struct {
	header http.Header
	status int
	body   []byte
}

// encodeResponse records what write writes, with its Content-Length.
func encodeResponse(write func(http.ResponseWriter)) *encodedResponse {
	r := &encodedResponse{header: http.Header{}, status: http.StatusOK}
	write(r)
	r.header.Set("Content-Length", strconv.Itoa(len(r.body)))
	return r
}

func (r *encodedResponse) Header() http.Header { return r.header }

func (r *encodedResponse) WriteHeader(status int) { r.status = status }

func (r *encodedResponse) Write(p []byte) (int, error) {
	r.body = append(r.body, p...)
	return len(p), nil
}

// writeTo writes the recorded response to w.
func (r *encodedResponse) writeTo(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	w.WriteHeader(r.status)
	_, _ = w.Write(r.body)
}
