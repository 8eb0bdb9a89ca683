package issuer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The audit path. Audit events are encoded on the request's goroutine and handed
// to one writer goroutine through a bounded queue; a request never touches the
// sink (a file on a full disk, a stderr pipe nobody reads). A write error, a full
// queue or an event not written within auditWriteBound marks the path failed:
// safeconduct_audit_healthy drops to 0, safeconduct_audit_write_failures_total
// counts, one line goes to the application log, and under fail_closed (the
// default) /readyz, /token and admin changes answer 503 until a write succeeds
// again. The first event written after a failure is an audit_recovered record
// saying how many events were lost and since when, so that the audit stream
// itself shows the gap.

const (
	// auditQueueLen bounds the events waiting for the writer (memory: a few MB).
	auditQueueLen = 4096
	// auditWriteBound is the longest a request waits for its durable event.
	auditWriteBound = 500 * time.Millisecond
	// auditRetry is how often a failed path is probed when no event comes.
	auditRetry = time.Second
	// auditBatchBytes bounds one write: PIPE_BUF, so that a batch on a stderr pipe
	// shared with the application log is never split between other lines.
	auditBatchBytes = 4096
	// auditCloseBound is how long Close waits for the queue to drain.
	auditCloseBound = 2 * time.Second
)

// Label values of safeconduct_audit_write_failures_total.
const (
	auditFailWrite   = "write_error" // the sink refused a write: the events are lost
	auditFailQueue   = "queue_full"  // the queue was full: the event is lost
	auditFailTimeout = "timeout"     // a durable event was not written in time, or a write has not returned
)

var (
	errAuditQueueFull = errors.New("audit queue full (the sink does not keep up)")
	errAuditTimeout   = errors.New("audit event not written within " + auditWriteBound.String())
	errAuditStalled   = errors.New("a write to the audit sink has not returned for " + auditWriteBound.String())
)

// auditEntry is one encoded event; done, when set, receives the write's result.
type auditEntry struct {
	buf  *[]byte
	done chan error
}

// Pools of what every durable event would otherwise allocate.
var (
	auditBufs   = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
	auditDones  = sync.Pool{New: func() any { return make(chan error, 1) }}
	auditTimers = sync.Pool{New: func() any { t := time.NewTimer(time.Hour); t.Stop(); return t }}
)

func putAuditBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		auditBufs.Put(b)
	}
}

// auditWriter writes audit events to the sink from one goroutine.
type auditWriter struct {
	sink       io.Writer
	failClosed bool
	queue      chan auditEntry
	healthy    atomic.Bool
	// lost counts the events lost since the last audit_recovered record.
	lost atomic.Int64
	// mu guards the failure's start and first error.
	mu          sync.Mutex
	failedSince time.Time
	failErr     string
	// changed wakes the reporter, which logs each transition once.
	changed  chan struct{}
	failures *prometheus.CounterVec
	log      *slog.Logger
	now      func() time.Time
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	// writing is when the write in progress began (unix ns; 0 when idle).
	writing atomic.Int64
	// torn is set when a failed write may have left a partial line (writer only).
	torn bool
	// scratch is the writer's batch buffer (writer only).
	scratch []byte
}

func newAuditWriter(sink io.Writer, failClosed bool, m *metrics, log *slog.Logger, now func() time.Time) *auditWriter {
	w := &auditWriter{
		sink: sink, failClosed: failClosed, queue: make(chan auditEntry, auditQueueLen),
		changed: make(chan struct{}, 1), log: log, now: now,
		stop: make(chan struct{}), done: make(chan struct{}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safeconduct_audit_write_failures_total",
			Help: "Audit events not written, by reason: write_error and queue_full (lost), timeout (a request gave up waiting).",
		}, []string{"reason"}),
	}
	w.healthy.Store(true)
	m.registry.MustRegister(w.failures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "safeconduct_audit_healthy",
		Help: "1 while audit events are being written, 0 after a write failed, the queue filled or a write timed out, until a write succeeds again.",
	}, func() float64 {
		if w.healthy.Load() {
			return 1
		}
		return 0
	}))
	for _, r := range []string{auditFailWrite, auditFailQueue, auditFailTimeout} {
		w.failures.WithLabelValues(r)
	}
	go w.run()
	go w.report()
	return w
}

// submit queues an encoded event. With wait it returns once the event is
// written, or with an error after at most auditWriteBound; without, at once.
func (w *auditWriter) submit(buf *[]byte, wait bool) error {
	e := auditEntry{buf: buf}
	if wait {
		e.done = auditDones.Get().(chan error)
	}
	if ws := w.writing.Load(); ws != 0 && time.Now().UnixNano()-ws > int64(auditWriteBound) && w.healthy.Load() {
		// The sink is stuck (a pipe nobody reads): failed, whether or not anyone
		// waits for this event.
		w.failures.WithLabelValues(auditFailTimeout).Inc()
		w.fail(errAuditStalled)
	}
	select {
	case w.queue <- e:
	default:
		putAuditBuf(buf)
		w.lost.Add(1)
		w.failures.WithLabelValues(auditFailQueue).Inc()
		w.fail(errAuditQueueFull)
		return errAuditQueueFull
	}
	if !wait {
		return nil
	}
	t := auditTimers.Get().(*time.Timer)
	t.Reset(auditWriteBound)
	defer func() { t.Stop(); auditTimers.Put(t) }() // no stale tick after Stop (Go 1.23)
	select {
	case err := <-e.done:
		auditDones.Put(e.done) // empty again; a channel given up on is not reused
		return err
	case <-t.C:
		w.failures.WithLabelValues(auditFailTimeout).Inc()
		w.fail(errAuditTimeout)
		return errAuditTimeout
	}
}

// fail marks the path failed (once per failure).
func (w *auditWriter) fail(err error) {
	if !w.healthy.Load() {
		return
	}
	w.mu.Lock()
	if w.healthy.Load() {
		w.failedSince, w.failErr = w.now(), err.Error()
		w.healthy.Store(false)
		w.notify()
	}
	w.mu.Unlock()
}

func (w *auditWriter) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// refuses reports whether changes must be refused now: fail_closed and failed.
func (w *auditWriter) refuses() bool { return w != nil && w.failClosed && !w.healthy.Load() }

// run is the writer goroutine: it takes what is queued (up to auditBatchBytes)
// and writes it in one call; while failed it probes every auditRetry.
func (w *auditWriter) run() {
	defer close(w.done)
	retry := time.NewTicker(auditRetry)
	defer retry.Stop()
	batch := make([]auditEntry, 0, 64)
	for {
		batch = batch[:0]
		select {
		case e := <-w.queue:
			batch = append(batch, e)
		case <-retry.C:
			if w.healthy.Load() {
				continue
			}
		case <-w.stop:
			w.drain()
			return
		}
		w.write(w.fill(batch))
	}
}

// fill adds queued events to batch while it stays within auditBatchBytes.
func (w *auditWriter) fill(batch []auditEntry) []auditEntry {
	size := 0
	for _, e := range batch {
		size += len(*e.buf)
	}
	for size < auditBatchBytes {
		select {
		case e := <-w.queue:
			batch = append(batch, e)
			size += len(*e.buf)
		default:
			return batch
		}
	}
	return batch
}

// drain writes what is queued at Close (bounded by auditCloseBound in close).
func (w *auditWriter) drain() {
	batch := make([]auditEntry, 0, 64)
	for len(w.queue) > 0 {
		w.write(w.fill(batch[:0]))
	}
}

// write writes batch, preceded by an audit_recovered record when it ends a
// failure, and tells the waiters.
func (w *auditWriter) write(batch []auditEntry) {
	out := w.scratch[:0]
	if w.torn {
		out = append(out, '\n') // end the partial line a failed write left
	}
	// Healthy again only once the queue has room: no flapping on a sink that
	// only just keeps up (until then events are written without the record).
	recovering := !w.healthy.Load() && len(w.queue) <= auditQueueLen/2
	var reported int64
	if recovering {
		reported = w.lost.Load()
		out = w.appendRecovered(out, reported)
	}
	for _, e := range batch {
		out = append(out, *e.buf...)
	}
	w.writing.Store(time.Now().UnixNano())
	n, err := w.sink.Write(out)
	w.writing.Store(0)
	if err == nil && n < len(out) {
		err = io.ErrShortWrite
	}
	w.scratch = out[:0]
	if err != nil {
		w.torn = w.torn || n > 0
		w.lost.Add(int64(len(batch)))
		w.failures.WithLabelValues(auditFailWrite).Add(float64(len(batch)))
		w.fail(err)
	} else {
		w.torn = false
		if recovering {
			w.lost.Add(-reported)
			w.mu.Lock()
			w.healthy.Store(true)
			w.notify()
			w.mu.Unlock()
		}
	}
	for _, e := range batch {
		if e.done != nil {
			e.done <- err
		}
		putAuditBuf(e.buf)
	}
}

// appendRecovered appends the audit_recovered record, in the audit events' shape.
func (w *auditWriter) appendRecovered(out []byte, lost int64) []byte {
	w.mu.Lock()
	since, cause := w.failedSince, w.failErr
	w.mu.Unlock()
	var buf appendWriter
	buf.b = out
	slog.New(slog.NewJSONHandler(&buf, nil)).LogAttrs(context.Background(), slog.LevelWarn, "audit_recovered",
		slog.String("log", "audit"), slog.String("event", "audit_recovered"), slog.Int64("lost", lost),
		slog.Time("failed_since", since), slog.String("error", cause),
		slog.Int("schema_version", AuditSchemaVersion), slog.String("event_id", newEventID()))
	return buf.b
}

// report logs each transition once on the application log. It runs on its own
// goroutine: when the application log is the same stuck pipe, only it blocks.
func (w *auditWriter) report() {
	was := true
	for {
		select {
		case <-w.changed:
		case <-w.done:
			return
		}
		w.mu.Lock()
		ok, since, cause := w.healthy.Load(), w.failedSince, w.failErr
		w.mu.Unlock()
		switch {
		case was && !ok:
			policy := "continue: tokens are still issued without audit events"
			if w.failClosed {
				policy = "fail_closed: /token and admin changes answer 503 until it recovers"
			}
			w.log.Error("audit log cannot be written", slog.String("error", cause), slog.String("on_failure", policy))
		case !was && ok:
			w.log.Info("audit log written again", slog.Time("failed_since", since))
		}
		was = ok
	}
}

// close writes what is queued (for at most auditCloseBound) and stops.
func (w *auditWriter) close() error {
	w.stopOnce.Do(func() { close(w.stop) })
	select {
	case <-w.done:
	case <-time.After(auditCloseBound):
	}
	return nil
}

// appendWriter collects what is written to it.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// auditHandler is the slog.Handler of the audit log on an auditWriter. Each
// event is encoded by a JSONHandler of a pooled encoder (no lock is shared
// between requests) into a buffer handed to the writer.
type auditHandler struct {
	w    *auditWriter
	with []func(slog.Handler) slog.Handler
	pool *sync.Pool
}

type auditEncoder struct {
	out appendWriter
	h   slog.Handler
}

func newAuditHandler(w *auditWriter, with []func(slog.Handler) slog.Handler) *auditHandler {
	h := &auditHandler{w: w, with: with}
	h.pool = &sync.Pool{New: func() any {
		enc := &auditEncoder{}
		enc.h = slog.NewJSONHandler(&enc.out, &slog.HandlerOptions{Level: slog.LevelInfo})
		for _, f := range with {
			enc.h = f(enc.h)
		}
		return enc
	}}
	return h
}

// Enabled: audit events are never silenced by log.level.
func (h *auditHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// Handle queues the event without waiting.
func (h *auditHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.handle(ctx, r, false)
}

// handle encodes r and queues it; with wait (under fail_closed only) it returns
// once the event is written or with an error after at most auditWriteBound.
func (h *auditHandler) handle(ctx context.Context, r slog.Record, wait bool) error {
	enc := h.pool.Get().(*auditEncoder)
	buf := auditBufs.Get().(*[]byte)
	enc.out.b = (*buf)[:0]
	err := enc.h.Handle(ctx, r)
	*buf = enc.out.b
	enc.out.b = nil
	h.pool.Put(enc)
	if err != nil {
		putAuditBuf(buf)
		return err
	}
	return h.w.submit(buf, wait && h.w.failClosed)
}

func (h *auditHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return newAuditHandler(h.w, append(h.with[:len(h.with):len(h.with)], func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) }))
}

func (h *auditHandler) WithGroup(name string) slog.Handler {
	return newAuditHandler(h.w, append(h.with[:len(h.with):len(h.with)], func(x slog.Handler) slog.Handler { return x.WithGroup(name) }))
}

// auditDurable writes an event that records a change (a token issued, a
// revocation recorded). Under fail_closed it returns only once the event is
// written, or with an error after at most auditWriteBound; the caller then
// answers 503 instead of success. Otherwise it is an ordinary audit event.
func (c *core) auditDurable(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) error {
	eh, _ := c.auditLog.Handler().(eventHandler)
	h, ok := eh.next.(*auditHandler)
	if !ok || !h.w.failClosed {
		c.auditLog.LogAttrs(ctx, level, msg, attrs...)
		return nil
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(attrs...)
	return h.handle(ctx, withEnvelope(ctx, r), true)
}

// auditRefuses reports whether changes must be refused before they are made:
// on_failure is fail_closed and the audit path has failed.
func (c *core) auditRefuses() bool { return c.audit.refuses() }
