package watch

import (
	"context"
	"sync"
	"time"
)

// Report kinds: what the watcher asks of the STS admin API.
const (
	// KindRevoke is POST /admin/v1/revocations (action revoke): the workload is
	// gone (pod or service account deleted, SPIRE entry deleted or changed, agent
	// evicted or banned) and every token it holds must stop working.
	KindRevoke = "revoke"
	// KindChange is POST /admin/v1/workloads/change (action report_change): the
	// workload's current runtime attributes; the STS revokes its tokens when their
	// binding fingerprint differs.
	KindChange = "change"
)

// Report is one request to the STS admin API, derived from a source's event.
type Report struct {
	Kind     string
	Source   string // "spire" or "kubernetes"
	Upstream string
	Subject  string
	// Selector and Reason are those of a revoke.
	Selector string
	Reason   string
	// Attributes are those of a change report; Instance names the workload
	// instance it describes (the source's own key, e.g. namespace/pod name), so
	// that a newer change of the same instance replaces a waiting one.
	Attributes map[string]string
	Instance   string
	// Observed is when the source saw the event (for the latency histogram).
	Observed time.Time
}

// key coalesces reports in the queue: a later report with the same key replaces
// a waiting one (a revoke with the same selector is the same revoke; a change of
// the same workload instance supersedes the earlier one).
func (r *Report) key() string {
	if r.Kind == KindRevoke {
		return "r\x00" + r.Upstream + "\x00" + r.Selector
	}
	return "c\x00" + r.Upstream + "\x00" + r.Subject + "\x00" + r.Instance
}

// Ticket tells a source when its report has been dealt with (delivered, or
// refused for good and counted), so that it persists its state only then.
type Ticket struct {
	done chan struct{}
	once sync.Once
}

func newTicket() *Ticket { return &Ticket{done: make(chan struct{})} }

func (t *Ticket) finish() { t.once.Do(func() { close(t.done) }) }

// Done is closed once the report is dealt with.
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Wait waits for every ticket, or ctx.
func Wait(ctx context.Context, ts []*Ticket) error {
	for _, t := range ts {
		select {
		case <-t.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type queued struct {
	r       Report
	tickets []*Ticket
}

// queue is a bounded FIFO of reports, coalescing by key. Put waits while it is
// full: no report is ever dropped for lack of room.
type queue struct {
	mu      sync.Mutex
	max     int
	order   []string // keys, FIFO
	items   map[string]*queued
	notFull chan struct{} // closed and replaced when room appears
	nonEmpt chan struct{} // closed and replaced when an item arrives
	onFull  func()
}

func newQueue(max int, onFull func()) *queue {
	return &queue{max: max, items: map[string]*queued{}, notFull: make(chan struct{}), nonEmpt: make(chan struct{}), onFull: onFull}
}

// put adds r (or merges it into a waiting report with the same key) and returns
// its ticket; it waits while the queue is full, until ctx ends.
func (q *queue) put(ctx context.Context, r Report) (*Ticket, error) {
	t := newTicket()
	warned := false
	for {
		q.mu.Lock()
		k := r.key()
		if it, ok := q.items[k]; ok {
			it.r = r
			it.tickets = append(it.tickets, t)
			q.mu.Unlock()
			return t, nil
		}
		if len(q.order) < q.max {
			q.items[k] = &queued{r: r, tickets: []*Ticket{t}}
			q.order = append(q.order, k)
			close(q.nonEmpt)
			q.nonEmpt = make(chan struct{})
			q.mu.Unlock()
			return t, nil
		}
		wait := q.notFull
		q.mu.Unlock()
		if !warned && q.onFull != nil {
			q.onFull()
			warned = true
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take removes and returns the oldest report, waiting for one until ctx ends.
func (q *queue) take(ctx context.Context) (*queued, error) {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			k := q.order[0]
			q.order = q.order[1:]
			it := q.items[k]
			delete(q.items, k)
			close(q.notFull)
			q.notFull = make(chan struct{})
			q.mu.Unlock()
			return it, nil
		}
		wait := q.nonEmpt
		q.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}
