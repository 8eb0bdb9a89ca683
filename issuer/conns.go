package issuer

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Connection limits. Every open connection costs memory (TLS and HTTP/2 state,
// two goroutines) whether or not it ever sends a request, so their number is
// bounded: at the bound, a new connection makes room by closing the connection
// that has been idle longest; when none is idle, the new one is closed at once.
// Idle here is without a request in progress: kept alive after one, or new and
// not yet through its first request's headers (a slow handshake or header
// sender is as cheap to lose). Idle connections are the cheap ones to lose (a
// client reconnects), and the newest are the likeliest to carry a request soon.

const (
	// defaultMaxConnections bounds open connections when Limits.MaxConnections
	// is 0: about 40 KB each when idle (TLS and HTTP/2 state, two goroutine
	// stacks), twice that while a burst of them is being handshaken and evicted.
	defaultMaxConnections = 1024
	// idleTimeout ends keep-alive connections (HTTP/1.1 and HTTP/2) without a
	// request in flight.
	idleTimeout = 30 * time.Second
	// HTTP/2 per connection: concurrent streams (RFC 9113 recommends at least
	// 100), the largest frame read, and the receive windows (a request body is
	// at most 64 KiB).
	maxStreamsPerConn   = 100
	maxReadFrameSize    = 16 << 10
	maxRecvBufPerConn   = 256 << 10
	maxRecvBufPerStream = maxBodyBytes + 1<<10
)

// Label values of safeconduct_connections_closed_total.
const (
	connEvictedIdle = "evicted_idle"
	connRefused     = "refused"
)

// connLimiter bounds the open connections of one server through its ConnState
// hook, which sees every connection from accept to close, and for HTTP/2 too
// whether a stream is open.
type connLimiter struct {
	max int

	mu sync.Mutex
	// open counts accepted connections not yet closed; idle orders the idle ones
	// (new ones included), longest idle first (values: net.Conn), byConn finds
	// them.
	open    int
	idle    *list.List
	byConn  map[net.Conn]*list.Element
	evicted prometheus.Counter
	refused prometheus.Counter
}

func newConnLimiter(maxConns int, m *metrics) *connLimiter {
	if maxConns <= 0 {
		maxConns = defaultMaxConnections
	}
	l := &connLimiter{max: maxConns, idle: list.New(), byConn: map[net.Conn]*list.Element{}}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "safeconduct_connections_closed_total",
		Help: "Connections closed by the server because limits.max_connections was reached: evicted_idle (the longest idle, to make room) or refused (a new one, when none was idle).",
	}, []string{"reason"})
	l.evicted = closed.WithLabelValues(connEvictedIdle)
	l.refused = closed.WithLabelValues(connRefused)
	m.registry.MustRegister(closed, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "safeconduct_connections_open",
		Help: "Open client connections (bounded by limits.max_connections).",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	}))
	return l
}

// apply sets srv's connection hook and its HTTP/2 limits.
func (l *connLimiter) apply(srv *http.Server) {
	srv.ConnState = l.track
	srv.HTTP2 = &http.HTTP2Config{
		MaxConcurrentStreams:          maxStreamsPerConn,
		MaxReadFrameSize:              maxReadFrameSize,
		MaxReceiveBufferPerConnection: maxRecvBufPerConn,
		MaxReceiveBufferPerStream:     maxRecvBufPerStream,
	}
}

// track is the http.Server ConnState hook.
func (l *connLimiter) track(c net.Conn, state http.ConnState) {
	var victim net.Conn
	l.mu.Lock()
	switch state {
	case http.StateNew:
		l.open++
		l.byConn[c] = l.idle.PushBack(c)
		if l.open > l.max {
			victim = l.idle.Remove(l.idle.Front()).(net.Conn) // c at least is there
			delete(l.byConn, victim)
			if victim == c {
				l.refused.Inc()
			} else {
				l.evicted.Inc()
			}
		}
	case http.StateIdle:
		if _, ok := l.byConn[c]; !ok {
			l.byConn[c] = l.idle.PushBack(c)
		}
	case http.StateActive:
		l.forget(c)
	case http.StateClosed, http.StateHijacked:
		l.forget(c)
		l.open--
	}
	l.mu.Unlock()
	if victim != nil {
		closeNow(victim)
	}
}

// forget drops c from the idle list (called with mu held).
func (l *connLimiter) forget(c net.Conn) {
	if e, ok := l.byConn[c]; ok {
		l.idle.Remove(e)
		delete(l.byConn, c)
	}
}

// idleCount is the number of idle connections (tests).
func (l *connLimiter) idleCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idle.Len()
}

// closeNow closes c's TCP connection: a TLS close_notify could block on a
// client that does not read. The server's goroutine for c then ends.
func closeNow(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_ = c.Close()
}
