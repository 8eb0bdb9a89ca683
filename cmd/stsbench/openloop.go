package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// arrivalKind is the open loop's arrival process (--arrivals).
type arrivalKind string

const (
	// arrivalsPoisson: exponentially distributed gaps (a Poisson process), the
	// usual model of many independent clients.
	arrivalsPoisson arrivalKind = "poisson"
	// arrivalsUniform: evenly spaced arrivals, exactly 1/rate apart.
	arrivalsUniform arrivalKind = "uniform"
)

// arrivalGaps returns a source of the gaps between consecutive arrivals, in
// seconds, for rate arrivals per second.
func arrivalGaps(kind arrivalKind, rate float64, rng *rand.Rand) func() float64 {
	if kind == arrivalsUniform {
		return func() float64 { return 1 / rate }
	}
	return func() float64 { return rng.ExpFloat64() / rate }
}

// job is one arrival handed to a connection.
type job struct {
	at     time.Time // scheduled arrival time
	body   int       // index of the subject token
	record bool      // the arrival falls in the measured window
}

// schedule is what the arrival scheduler observed.
type schedule struct {
	start     time.Time     // start of the measured window (zero if never reached)
	window    time.Duration // real time over which the window's arrivals were dispatched
	s0, g0    time.Duration // server and generator CPU at start
	scheduled int           // arrivals in the measured window
	notSent   int           // of those, arrivals that found maxOutstanding outstanding
	exhausted bool          // stopped by --max-requests
}

// runOpen is the open loop: arrivals at --rate (Poisson or evenly spaced) from
// one scheduler, sent by a pool of --concurrency workers, each with its own
// keep-alive connection. An arrival is handed to the pool unless
// --max-outstanding requests are already sent or waiting for a connection; then
// it is not sent and counted (the client, not the STS, is saturated). The offered
// load therefore never adapts to the server's answers, and an arrival is never
// delayed by an earlier one beyond the bound: no coordinated omission.
//
// The scheduler runs through the warmup and the measured window without a pause
// (arrivals of the warmup still in flight finish in the window, as under real
// load); latencies are from sending to the whole answer, and the delay from the
// scheduled arrival to sending is reported separately (SendDelay).
func (b *bench) runOpen(parent context.Context, server *procCPU) (*result, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	b.abort = cancel
	defer func() {
		for _, w := range b.workers {
			w.client.CloseIdleConnections()
		}
	}()

	// Outstanding arrivals (queued in jobs or being sent) never exceed
	// maxOutstanding, so sending to jobs never blocks the scheduler.
	jobs := make(chan job, b.o.maxOutstanding)
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	for _, w := range b.workers {
		wg.Go(func() { w.serve(ctx, b, jobs, &outstanding) })
	}
	sc, err := b.schedule(ctx, jobs, &outstanding, server)
	close(jobs)
	wg.Wait()
	wall := time.Since(sc.start)
	g1 := selfCPU()
	if err != nil {
		return nil, err
	}
	if parent.Err() == nil {
		if err := b.aborted(parent, ctx); err != nil {
			return nil, err
		}
	}
	if sc.start.IsZero() {
		return nil, errors.New("interrupted") // before the measured window
	}
	var s1 time.Duration
	if server != nil {
		if s1, err = server.cpu(); err != nil {
			return nil, fmt.Errorf("--pid: the STS process is gone: %w", err)
		}
	}

	res := b.collect(wall)
	res.Mode = modeOpen
	if sc.exhausted {
		res.Stopped = stopMaxRequests
	}
	if parent.Err() != nil {
		res.Stopped = stopInterrupted
	}
	var delay []time.Duration
	for _, w := range b.workers {
		delay = append(delay, w.delay...)
	}
	res.Open = &openReport{
		Rate:           b.o.rate,
		Arrivals:       b.o.arrivals,
		MaxOutstanding: b.o.maxOutstanding,
		Scheduled:      sc.scheduled,
		Sent:           sc.scheduled - sc.notSent,
		NotSent:        sc.notSent,
		SendDelay:      percentiles(delay),
	}
	if sc.window > 0 {
		res.Open.OfferedRate = float64(sc.scheduled) / sc.window.Seconds()
	}
	res.Generator = newCPUReport(g1-sc.g0, wall, res.OK+res.Limited+res.Errors)
	if server != nil {
		r := newCPUReport(s1-sc.s0, wall, res.OK)
		r.PID, r.Name = server.pid, server.name
		res.Server = &r
	}
	return res, nil
}

// schedule generates the arrivals of the warmup and the measured window and
// hands them to the workers. It samples the CPU clocks when the measured window
// starts. At most --max-requests arrivals are scheduled per phase.
func (b *bench) schedule(ctx context.Context, jobs chan<- job, outstanding *atomic.Int64, server *procCPU) (schedule, error) {
	var sc schedule
	gap := arrivalGaps(b.o.arrivals, b.o.rate, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	limit := int64(b.o.maxOutstanding)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	base := time.Now()
	warmEnd := base.Add(b.o.warmup)
	end := warmEnd.Add(b.o.duration)
	// Arrival times are base + the sum of the gaps, computed in float seconds so
	// that evenly spaced arrivals do not drift by rounding.
	var offset float64
	next := base
	var inPhase int64 // arrivals scheduled in the current phase
	body := 0
	for ctx.Err() == nil && next.Before(end) {
		record := !next.Before(warmEnd)
		if record && sc.start.IsZero() {
			if !sleepUntil(ctx, timer, warmEnd) {
				break
			}
			if server != nil {
				s0, err := server.cpu()
				if err != nil {
					return sc, fmt.Errorf("--pid: %w", err)
				}
				sc.s0 = s0
			}
			sc.g0 = selfCPU()
			sc.start = time.Now()
			inPhase = 0
		}
		if inPhase >= b.o.maxRequests {
			if !record { // the warmup's budget is spent: go on with the window
				offset, next = warmEnd.Sub(base).Seconds(), warmEnd
				continue
			}
			sc.exhausted = true
			break
		}
		if !sleepUntil(ctx, timer, next) {
			break
		}
		// A late wake-up (scheduling, a busy CPU) sends the arrivals that are due
		// at once; SendDelay shows how late they were.
		inPhase++
		if record {
			sc.scheduled++
		}
		if outstanding.Load() >= limit {
			if record {
				sc.notSent++
			}
		} else {
			outstanding.Add(1) // only this goroutine adds, so the bound holds
			jobs <- job{at: next, body: body, record: record}
		}
		body = (body + 1) % len(b.bodies)
		offset += gap()
		next = base.Add(time.Duration(offset * float64(time.Second)))
	}
	if !sc.start.IsZero() {
		// The real time the window's arrivals were dispatched over: shorter than
		// --duration when the scheduler started the window late and caught up (the
		// offered rate was then higher than --rate), longer when it ended late.
		stop := time.Now()
		if !sc.exhausted && ctx.Err() == nil {
			stop = later(stop, end)
		}
		sc.window = stop.Sub(sc.start)
	}
	return sc, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sleepUntil waits until t or ctx ends; it reports whether t was reached.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// serve sends the arrivals handed to this worker on its connection, one at a
// time, until jobs is closed.
func (w *worker) serve(ctx context.Context, b *bench, jobs <-chan job, outstanding *atomic.Int64) {
	for j := range jobs {
		if ctx.Err() != nil {
			outstanding.Add(-1) // drain without sending
			continue
		}
		t0 := time.Now()
		out, kind := w.exchange(ctx, b.url, b.bodies[j.body])
		d := time.Since(t0)
		outstanding.Add(-1)
		if ctx.Err() != nil {
			continue // cut short by an interrupt or an abort: not a result
		}
		errs := w.warmErrs
		if j.record {
			errs = w.errs
			w.delay = append(w.delay, t0.Sub(j.at))
		}
		w.note(b, out, kind, d, j.record, errs)
	}
}
