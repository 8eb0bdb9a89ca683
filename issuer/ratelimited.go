package issuer

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// The 429s of the limits before authentication (per_ip, overload, in_flight)
// are audited aggregated: one rate_limited event per reason and client address
// per refusalWindow, with the count. A flood costs a map increment per refusal,
// and memory stays bounded: beyond refusalMaxKeys addresses in a window, the rest
// are counted together under client_addr "*". (per_workload and per_client
// refusals come after verification and are exchange events of their own.)

const (
	refusalWindow  = 10 * time.Second
	refusalMaxKeys = 10_000
)

type refusalKey struct {
	reason string
	addr   netip.Addr
}

// refusalAudit counts refusals for the current window.
type refusalAudit struct {
	log    *slog.Logger
	now    func() time.Time
	window time.Duration

	mu       sync.Mutex
	counts   map[refusalKey]int64
	overflow map[string]int64 // by reason
	start    time.Time

	stop, done chan struct{}
	once       sync.Once
}

// startRefusalAudit wires the audit of the pre-authentication 429s and gives
// admin events the client address; Close flushes the refusals first (before the
// audit writer's queue is drained and the sink closed).
func (s *Server) startRefusalAudit() {
	s.clientIP = s.limits.clientIP
	a := newRefusalAudit(s.auditLog, s.now)
	s.limits.refusals = a
	if s.adminLimits != nil {
		s.adminLimits.refusals = a
	}
	go a.run()
	s.closers = append([]func() error{a.close}, s.closers...)
}

func newRefusalAudit(log *slog.Logger, now func() time.Time) *refusalAudit {
	return &refusalAudit{log: log, now: now, window: refusalWindow, counts: map[refusalKey]int64{},
		overflow: map[string]int64{}, start: now(), stop: make(chan struct{}), done: make(chan struct{})}
}

// refused records a 429 of reason for r's client.
func (l *tokenLimits) refused(reason string, r *http.Request) {
	if l.refusals != nil {
		l.refusals.add(reason, l.clientAddr(r))
	}
}

func (a *refusalAudit) add(reason string, addr netip.Addr) {
	k := refusalKey{reason, addr}
	a.mu.Lock()
	if _, ok := a.counts[k]; ok || len(a.counts) < refusalMaxKeys {
		a.counts[k]++
	} else {
		a.overflow[reason]++
	}
	a.mu.Unlock()
}

func (a *refusalAudit) run() {
	defer close(a.done)
	t := time.NewTicker(a.window)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.flush()
		case <-a.stop:
			a.flush()
			return
		}
	}
}

// flush writes one event per reason and address of the window, and starts the
// next.
func (a *refusalAudit) flush() {
	a.mu.Lock()
	counts, overflow, start := a.counts, a.overflow, a.start
	if len(counts) > 0 || len(overflow) > 0 {
		a.counts, a.overflow = map[refusalKey]int64{}, map[string]int64{}
	}
	a.start = a.now()
	a.mu.Unlock()
	for k, n := range counts {
		a.write(start, k.reason, clientAddrAttr(k.addr, true), n)
	}
	for reason, n := range overflow {
		a.write(start, reason, slog.String("client_addr", "*"), n)
	}
}

func (a *refusalAudit) write(start time.Time, reason string, addr slog.Attr, n int64) {
	a.log.LogAttrs(context.Background(), slog.LevelWarn, "rate_limited",
		slog.String("event", "rate_limited"), slog.String("reason", reason), addr,
		slog.Int64("count", n), slog.Time("window_start", start), slog.Float64("window_s", a.window.Seconds()))
}

func (a *refusalAudit) close() error {
	a.once.Do(func() { close(a.stop) })
	<-a.done
	return nil
}

// clientAddrAttr is the client_addr of audit events: the client's address
// after trusted proxies; a per-IP key of an IPv6 client as its /64.
func clientAddrAttr(a netip.Addr, key bool) slog.Attr {
	return slog.String("client_addr", clientAddr(a, key))
}
