package spiffe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safeconduct/safeconduct/attest"
)

// bundleCache holds the trust domain's last good bundle. Reads are lock-free (an
// atomic snapshot). For a fetched source (file, endpoint) fetches run one at a
// time, at most one per minInterval whatever triggers them, in the background
// (no caller's cancellation aborts one for the others), bounded by timeout, and are
// shared by every caller waiting for them. A pushed source (Workload API) has no
// fetch: its updates arrive through set.
type bundleCache struct {
	cur atomic.Pointer[snapshot]

	// fetch obtains and vets a new bundle; nil for a pushed source.
	fetch func(ctx context.Context) (*snapshot, error)
	// what names the source in logs and errors.
	what string
	// baseCtx is canceled by close, which aborts a running fetch.
	baseCtx context.Context
	cancel  context.CancelFunc
	timeout time.Duration
	now     func() time.Time
	// minInterval is the least time between two fetch starts.
	minInterval time.Duration
	// refreshAfter is the age at which a bundle is fetched again in the background.
	refreshAfter func(*snapshot) time.Duration
	// maxStale is the age after which a bundle is unusable; zero: never (a local
	// file stays authoritative however old).
	maxStale time.Duration
	log      *slog.Logger

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running fetch ends; nil if none
	lastAttempt time.Time     // start of the last fetch
	lastErr     error         // outcome of the last fetch or push
	closed      bool
	wg          sync.WaitGroup

	updates, failures atomic.Uint64
}

var errClosed = errors.New("verifier closed")

// current returns a usable snapshot: fresh, or aging within maxStale (a background
// refresh is started), or freshly fetched. Errors wrap attest.ErrUnavailable.
func (c *bundleCache) current(ctx context.Context) (*snapshot, error) {
	s := c.cur.Load()
	if c.fetch == nil {
		if s == nil {
			return nil, c.unavailable(nil)
		}
		return s, nil
	}
	if s != nil {
		age := c.now().Sub(s.fetched)
		if age < c.refreshAfter(s) {
			return s, nil
		}
		if c.usable(s) {
			c.start()
			return s, nil
		}
	}
	// No usable bundle: first use, or stale beyond the bound. Fetch (rate limited).
	if err := c.refreshAndWait(ctx); err != nil {
		return nil, err
	}
	if s = c.cur.Load(); s != nil && c.usable(s) {
		return s, nil
	}
	return nil, c.unavailable(s)
}

// usable reports whether s is within maxStale.
func (c *bundleCache) usable(s *snapshot) bool {
	return c.maxStale == 0 || c.now().Sub(s.fetched) < c.maxStale
}

// unavailable is the error for having no usable bundle; s is the stale one, if any.
func (c *bundleCache) unavailable(s *snapshot) error {
	c.mu.Lock()
	lastErr, closed := c.lastErr, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		lastErr = errClosed
	case lastErr == nil && c.fetch == nil:
		lastErr = errors.New("no bundle received yet")
	case lastErr == nil:
		lastErr = errors.New("no bundle fetched yet")
	}
	if s != nil {
		return fmt.Errorf("%w: %s: bundle older than %v and refresh failing: %w", attest.ErrUnavailable, c.what, c.maxStale, lastErr)
	}
	return fmt.Errorf("%w: %s: %w", attest.ErrUnavailable, c.what, lastErr)
}

// refreshNow is for an unknown key ID: one fetch (rate limited, shared), waited
// for. It returns whether the bundle changed since seen. A pushed source never
// fetches.
func (c *bundleCache) refreshNow(ctx context.Context, seen *snapshot) (bool, error) {
	if c.fetch == nil {
		return false, nil
	}
	if err := c.refreshAndWait(ctx); err != nil {
		return false, err
	}
	return c.cur.Load() != seen, nil
}

// refreshAndWait starts a fetch if allowed and waits for the running one, if any.
func (c *bundleCache) refreshAndWait(ctx context.Context) error {
	done := c.start()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %s: waiting for the bundle: %w", attest.ErrUnavailable, c.what, ctx.Err())
	}
}

// start starts a fetch unless one is running, the last started less than
// minInterval ago, or the cache is closed. It returns the channel of the running
// fetch, nil when there is none.
func (c *bundleCache) start() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	now := c.now()
	if c.closed || (!c.lastAttempt.IsZero() && now.Sub(c.lastAttempt) < c.minInterval) {
		return nil
	}
	c.lastAttempt = now
	done := make(chan struct{})
	c.inflight = done
	c.wg.Add(1)
	go c.run(done)
	return done
}

func (c *bundleCache) run(done chan struct{}) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.baseCtx, c.timeout)
	s, err := c.fetch(ctx)
	cancel()
	c.mu.Lock()
	defer close(done)
	defer c.mu.Unlock()
	c.inflight = nil
	if err == nil {
		err = checkSuccessor(c.cur.Load(), s)
	}
	if err != nil {
		c.lastErr = shorten(err)
		c.failures.Add(1)
		c.log.Warn("SPIFFE bundle refresh failed; keeping the last good bundle", "source", c.what, "error", c.lastErr)
		return
	}
	c.lastErr = nil
	s.fetched = c.now()
	c.swap(s)
}

// swap installs s, logging when the authorities changed. Called with c.mu held.
func (c *bundleCache) swap(s *snapshot) {
	old := c.cur.Swap(s)
	c.updates.Add(1)
	if !sameAuthorities(old, s) {
		c.log.Info("SPIFFE bundle updated", append([]any{"source", c.what}, s.describe()...)...)
	}
}

// set installs a pushed snapshot (Workload API), or records a refused update.
func (c *bundleCache) set(s *snapshot, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if err != nil {
		c.lastErr = shorten(err)
		c.failures.Add(1)
		c.log.Warn("SPIFFE bundle update refused; keeping the last good bundle", "source", c.what, "error", c.lastErr)
		return
	}
	c.lastErr = nil
	s.fetched = c.now()
	c.swap(s)
}

// drop forgets the bundle: the pushed source no longer delivers it.
func (c *bundleCache) drop(reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.lastErr = reason
	if c.cur.Swap(nil) != nil {
		c.log.Warn("SPIFFE bundle withdrawn by its source", "source", c.what, "reason", reason)
	}
}

// noteError records a pushed source's connection error, reported by verifications
// while no bundle has arrived.
func (c *bundleCache) noteError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && c.cur.Load() == nil {
		c.lastErr = shorten(err)
	}
}

// close stops fetching, waits for a running fetch to end and makes every later
// verification fail with attest.ErrUnavailable.
func (c *bundleCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.cur.Store(nil)
}

// maxErrorText bounds the detail of a fetch error kept for logs and errors.
const maxErrorText = 512

func shorten(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorText {
		return err
	}
	return errors.New(strings.ToValidUTF8(msg[:maxErrorText], "") + "...")
}
