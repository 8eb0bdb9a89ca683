package keycache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Value is a value held by a Cache with the time it was obtained. Values are never
// modified once installed: a refresh installs a new one.
type Value[T any] struct {
	V T
	// Fetched is when V was fetched, read or pushed (Config.Now).
	Fetched time.Time
}

// Config configures a Cache. Zero durations mean "no bound" where documented.
type Config[T any] struct {
	// Fetch obtains a new value; nil for a pushed source (Set, Drop). It is called
	// from a goroutine of its own, one call at a time.
	Fetch func(ctx context.Context) (T, error)
	// Context supplies values to fetches; its cancellation is ignored (Close stops
	// fetches).
	Context context.Context
	// Timeout bounds one fetch (zero: no bound beyond Close).
	Timeout time.Duration
	// Now is the clock (default time.Now); tests inject a fake one.
	Now func() time.Time
	// MinInterval is the least time between two fetch starts.
	MinInterval time.Duration
	// RefreshAfter is the age at which a value is fetched again in the background
	// (nil: never, the value is refetched only by Refresh or once unusable).
	RefreshAfter func(T) time.Duration
	// MaxStale is the age after which a value is unusable; zero: never.
	MaxStale time.Duration
	// Accept, when set, vets a fetched or pushed value against the one held (nil
	// when none): an error refuses it, keeping the last good one.
	Accept func(old *Value[T], v T) error

	// What names the source in errors ("" for none), Noun what it holds ("keys",
	// "bundle"), for messages such as "bundle older than 1h0m0s and refresh
	// failing".
	What, Noun string
	// Unavailable is the sentinel every error of Current and Refresh wraps.
	Unavailable error
	// OnUpdate is called, with the cache's lock held, after a value was installed
	// (old is nil for the first). OnFailure is called likewise after a fetch or a
	// pushed update failed or was refused, with the error as kept (shortened).
	OnUpdate  func(old, cur *Value[T])
	OnFailure func(err error)
}

// ErrClosed is the last error of a closed cache.
var ErrClosed = errors.New("verifier closed")

// Cache holds the last good value of a source. It is safe for concurrent use.
type Cache[T any] struct {
	cfg    Config[T]
	cur    atomic.Pointer[Value[T]]
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	inflight    chan struct{} // closed when the running fetch ends; nil if none
	lastAttempt time.Time     // start of the last fetch
	lastErr     error         // outcome of the last fetch or push
	closed      bool

	lag atomic.Pointer[lag] // pushed source: see Lagging; nil while current

	updates, failures atomic.Uint64
}

// lag is since when, and why, a pushed value may be behind its source.
type lag struct {
	since  time.Time
	reason error
}

// New returns an empty cache.
func New[T any](cfg Config[T]) *Cache[T] {
	ctx := cfg.Context
	if ctx == nil {
		ctx = context.Background()
	}
	if cfg.Unavailable == nil {
		cfg.Unavailable = errors.New("keys unavailable")
	}
	if cfg.Noun == "" {
		cfg.Noun = "keys"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache[T]{cfg: cfg}
	c.base, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return c
}

// Load returns the value held, nil when there is none, whatever its age.
func (c *Cache[T]) Load() *Value[T] { return c.cur.Load() }

// Store installs v as obtained now, without Accept: for a value read and vetted at
// start-up. It does not count as an update.
func (c *Cache[T]) Store(v T) {
	c.cur.Store(&Value[T]{V: v, Fetched: c.cfg.Now()})
}

// Updates counts the values installed, fetched or pushed (not Store).
func (c *Cache[T]) Updates() uint64 { return c.updates.Load() }

// Failures counts the fetches and pushed updates that failed or were refused.
func (c *Cache[T]) Failures() uint64 { return c.failures.Load() }

// LastError returns the outcome of the last fetch or push (nil after a success).
func (c *Cache[T]) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Current returns a usable value: fresh, or aging within MaxStale (a background
// refresh is started past RefreshAfter), or freshly fetched (waited for, rate
// limited). Errors wrap Config.Unavailable.
func (c *Cache[T]) Current(ctx context.Context) (*Value[T], error) {
	v := c.cur.Load()
	if c.cfg.Fetch == nil {
		if v == nil {
			return nil, c.unavailable(nil)
		}
		if l := c.lag.Load(); l != nil && c.cfg.MaxStale > 0 && c.cfg.Now().Sub(l.since) >= c.cfg.MaxStale {
			return nil, fmt.Errorf("%w: %s%s not confirmed by its source for %v: %w", c.cfg.Unavailable, c.what(), c.cfg.Noun, c.cfg.MaxStale, l.reason)
		}
		return v, nil
	}
	if v != nil {
		if c.cfg.RefreshAfter == nil || c.cfg.Now().Sub(v.Fetched) < c.cfg.RefreshAfter(v.V) {
			return v, nil
		}
		if c.usable(v) {
			c.start()
			return v, nil
		}
	}
	// No usable value: first use, or stale beyond the bound. Fetch (rate limited).
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	if v = c.cur.Load(); v != nil && c.usable(v) {
		return v, nil
	}
	return nil, c.unavailable(v)
}

// Refresh is for a key ID the value held lacks: one fetch (shared, rate limited:
// none within MinInterval of the last), waited for. It returns the value held
// afterwards, which is seen when nothing changed (always for a pushed source).
// Errors wrap Config.Unavailable (ctx ended while waiting).
func (c *Cache[T]) Refresh(ctx context.Context, seen *Value[T]) (*Value[T], error) {
	if c.cfg.Fetch == nil {
		return seen, nil
	}
	if err := c.wait(ctx); err != nil {
		return nil, err
	}
	return c.cur.Load(), nil
}

// usable reports whether v is within MaxStale.
func (c *Cache[T]) usable(v *Value[T]) bool {
	return c.cfg.MaxStale == 0 || c.cfg.Now().Sub(v.Fetched) < c.cfg.MaxStale
}

// unavailable is the error for having no usable value; v is the stale one, if any.
func (c *Cache[T]) unavailable(v *Value[T]) error {
	c.mu.Lock()
	lastErr, closed := c.lastErr, c.closed
	c.mu.Unlock()
	switch {
	case closed:
		lastErr = ErrClosed
	case lastErr == nil && c.cfg.Fetch == nil:
		lastErr = fmt.Errorf("no %s received yet", c.cfg.Noun)
	case lastErr == nil:
		lastErr = fmt.Errorf("no %s fetched yet", c.cfg.Noun)
	}
	if v != nil {
		return fmt.Errorf("%w: %s%s older than %v and refresh failing: %w", c.cfg.Unavailable, c.what(), c.cfg.Noun, c.cfg.MaxStale, lastErr)
	}
	return fmt.Errorf("%w: %s%w", c.cfg.Unavailable, c.what(), lastErr)
}

func (c *Cache[T]) what() string {
	if c.cfg.What == "" {
		return ""
	}
	return c.cfg.What + ": "
}

// wait starts a fetch if allowed and waits for the running one, if any.
func (c *Cache[T]) wait(ctx context.Context) error {
	done := c.start()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %swaiting for %s: %w", c.cfg.Unavailable, c.what(), c.cfg.Noun, ctx.Err())
	}
}

// start starts a fetch unless one is running, the last started less than
// MinInterval ago, or the cache is closed. It returns the channel of the running
// fetch, nil when there is none.
func (c *Cache[T]) start() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	now := c.cfg.Now()
	if c.closed || (!c.lastAttempt.IsZero() && now.Sub(c.lastAttempt) < c.cfg.MinInterval) {
		return nil
	}
	c.lastAttempt = now
	done := make(chan struct{})
	c.inflight = done
	c.wg.Add(1)
	// The fetch runs on its own so that no caller's cancellation aborts it for the
	// others.
	go c.run(done)
	return done
}

func (c *Cache[T]) run(done chan struct{}) {
	defer c.wg.Done()
	ctx, cancel := c.base, context.CancelFunc(func() {})
	if c.cfg.Timeout > 0 {
		ctx, cancel = context.WithTimeout(c.base, c.cfg.Timeout)
	}
	v, err := c.cfg.Fetch(ctx)
	cancel()
	c.mu.Lock()
	defer close(done)
	defer c.mu.Unlock()
	c.inflight = nil
	c.install(v, err)
}

// Set installs a pushed value, or records a refused update (err not nil).
func (c *Cache[T]) Set(v T, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.install(v, err)
	}
}

// install vets and installs v, or records err. Called with c.mu held.
func (c *Cache[T]) install(v T, err error) {
	old := c.cur.Load()
	if err == nil && c.cfg.Accept != nil {
		err = c.cfg.Accept(old, v)
	}
	if err != nil {
		c.lastErr = shorten(err)
		c.failures.Add(1)
		if c.cfg.OnFailure != nil {
			c.cfg.OnFailure(c.lastErr)
		}
		return
	}
	c.lastErr = nil
	cur := &Value[T]{V: v, Fetched: c.cfg.Now()}
	c.cur.Store(cur)
	c.updates.Add(1)
	if c.cfg.OnUpdate != nil {
		c.cfg.OnUpdate(old, cur)
	}
}

// Drop forgets the value held: a pushed source no longer delivers it. It reports
// whether there was one.
func (c *Cache[T]) Drop(reason error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.lastErr = reason
	return c.cur.Swap(nil) != nil
}

// LaggingSince returns since when a pushed value may be behind its source (see
// Lagging); zero while it is current.
func (c *Cache[T]) LaggingSince() time.Time {
	if l := c.lag.Load(); l != nil {
		return l.since
	}
	return time.Time{}
}

// Lagging records since when a pushed source's value may be behind the source's
// (its connection broke, or an update failed or was refused, at since) and why;
// the reason is also reported by Current while no value has arrived. The zero
// time means the value is current again (connected, last update accepted). A
// pushed value does not age while current: its source pushes every change. Once
// it has lagged for MaxStale (when set), Current fails.
func (c *Cache[T]) Lagging(since time.Time, reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if since.IsZero() {
		c.lag.Store(nil)
		return
	}
	if reason == nil {
		reason = errors.New("unknown reason")
	}
	reason = shorten(reason)
	c.lag.Store(&lag{since: since, reason: reason})
	if c.cur.Load() == nil {
		c.lastErr = reason
	}
}

// Stop stops fetching and waits for a running fetch to end; the value held stays
// usable (within MaxStale) but is never refreshed again. It is idempotent.
func (c *Cache[T]) Stop() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Close is Stop, then forgets the value: every later Current fails with ErrClosed.
// It is idempotent.
func (c *Cache[T]) Close() {
	c.Stop()
	c.cur.Store(nil)
}

// maxErrorText bounds the detail of an error kept for logs and errors: source
// controlled text (a discovered issuer, a bundle) stays small.
const maxErrorText = 512

func shorten(err error) error {
	msg := err.Error()
	if len(msg) <= maxErrorText {
		return err
	}
	return errors.New(strings.ToValidUTF8(msg[:maxErrorText], "") + "...")
}
