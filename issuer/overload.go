package issuer

import (
	"math"
	"math/rand/v2"
	rtmetrics "runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Overload shedding. max_in_flight counts requests inside the handler, but when
// the CPU is saturated the queue forms before it: requests wait in socket
// buffers and run queues for a CPU to read them, and every one of them will be
// served, late. The gate watches two queue signals every overloadInterval:
//
//   - how long the requests it admits have been waiting in the kernel: on Linux,
//     TCP_INFO's last_data_recv of the connection when the handler starts (the
//     client sent its request and nothing since), the smallest over the interval
//     (like CoDel: a standing queue, not a burst);
//   - how long goroutines waited runnable for a CPU (runtime/metrics
//     /sched/latencies:seconds, 90th percentile over the interval).
//
// While either is over the target, the fraction of /token requests refused at
// once with 429 (which costs a small fraction of an exchange) goes up by a step;
// once both are under, it comes down by a smaller one. Shedding a fraction rather
// than everything keeps the admitted rate near capacity without on/off bursts,
// and the queue that would make admitted requests late drains. A busy CPU alone
// is not a reason to shed: a server at capacity without a queue serves everyone
// on time.

const (
	schedLatencyMetric = "/sched/latencies:seconds"
	overloadInterval   = 25 * time.Millisecond
	// defaultQueueDelay is the scheduling delay (90th percentile over an
	// interval) above which the gate sheds.
	defaultQueueDelay = 50 * time.Millisecond
	// overloadMinSamples: fewer scheduling events in an interval say nothing.
	overloadMinSamples = 50
)

// Steps of the shed fraction per interval, in 1/shedScale.
const (
	shedScale = 1000
	shedUp    = 50  // +5% per interval over a mark
	shedDown  = 20  // -2% per interval under both
	shedMax   = 990 // always admit some, to keep measuring
)

// overloadGate sheds /token requests while the process is CPU-saturated.
type overloadGate struct {
	target float64 // scheduling delay mark, seconds
	// shed is the fraction of requests to refuse, in 1/shedScale.
	shed atomic.Int32

	// read returns the cumulative scheduling latency histogram (tests replace
	// it).
	read func() *rtmetrics.Float64Histogram
	prev []uint64
	// minAge is the smallest kernel queue age (ns) seen since the last tick;
	// math.MaxInt64 when none was.
	minAge atomic.Int64

	stop chan struct{}
	once sync.Once
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
		stop: make(chan struct{}),
	}
	g.minAge.Store(math.MaxInt64)
	return g
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

// tick reads both signals and steers the shed fraction.
func (g *overloadGate) tick(time.Time) {
	age := g.minAge.Swap(math.MaxInt64)
	queued := age != math.MaxInt64 && float64(age) > g.target*1e9
	delay, haveDelay := g.schedDelay()
	if queued || haveDelay && delay > g.target {
		g.shed.Store(min(shedMax, g.shed.Load()+shedUp))
	} else {
		g.shed.Store(max(0, g.shed.Load()-shedDown))
	}
}

// observe records the kernel queue age of a request being admitted.
func (g *overloadGate) observe(age time.Duration) {
	for {
		cur := g.minAge.Load()
		if int64(age) >= cur || g.minAge.CompareAndSwap(cur, int64(age)) {
			return
		}
	}
}

// schedDelay is the 90th percentile of scheduling latency since the last call.
func (g *overloadGate) schedDelay() (float64, bool) {
	h := g.read()
	if h == nil {
		return 0, false
	}
	if len(g.prev) != len(h.Counts) {
		g.prev = make([]uint64, len(h.Counts))
		copy(g.prev, h.Counts)
		return 0, false
	}
	delta := make([]uint64, len(h.Counts))
	var n uint64
	for i, c := range h.Counts {
		delta[i] = c - g.prev[i]
		n += delta[i]
	}
	copy(g.prev, h.Counts)
	if n < overloadMinSamples {
		return 0, false
	}
	return quantile(delta, h.Buckets, n, 0.9), true
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
