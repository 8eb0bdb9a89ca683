package keycache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/fakeclock"
)

var errDown = errors.New("unavailable for the test")

// source is a fetched source whose answers the test sets.
type source struct {
	calls   atomic.Int64
	mu      sync.Mutex
	version int
	err     error
	gate    chan struct{} // when set, fetches wait for it to close
}

func (s *source) fetch(ctx context.Context) (int, error) {
	s.calls.Add(1)
	s.mu.Lock()
	v, err, gate := s.version, s.err, s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return v, err
}

func (s *source) set(v int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.err = v, err
}

const (
	minInterval = 10 * time.Second
	refresh     = 5 * time.Minute
	maxStale    = time.Hour
)

func newCache(t *testing.T, mods ...func(*Config[int])) (*Cache[int], *source, *fakeclock.Clock) {
	t.Helper()
	src := &source{version: 1}
	clk := fakeclock.New(time.Unix(1_700_000_000, 0))
	cfg := Config[int]{
		Fetch:        src.fetch,
		Context:      t.Context(),
		Timeout:      time.Second,
		Now:          clk.Now,
		MinInterval:  minInterval,
		RefreshAfter: func(int) time.Duration { return refresh },
		MaxStale:     maxStale,
		What:         "test source",
		Noun:         "keys",
		Unavailable:  errDown,
	}
	for _, m := range mods {
		m(&cfg)
	}
	c := New(cfg)
	t.Cleanup(c.Close)
	return c, src, clk
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func mustCurrent(t *testing.T, c *Cache[int], want int) {
	t.Helper()
	v, err := c.Current(t.Context())
	if err != nil || v.V != want {
		t.Fatalf("Current = %v, %v; want %d", v, err, want)
	}
}

func TestLazyFirstFetch(t *testing.T) {
	c, src, clk := newCache(t)
	if src.calls.Load() != 0 || c.Load() != nil {
		t.Fatal("New fetched")
	}
	mustCurrent(t, c, 1)
	if v := c.Load(); !v.Fetched.Equal(clk.Now()) {
		t.Fatalf("Fetched %v, want %v", v.Fetched, clk.Now())
	}
	for range 10 {
		mustCurrent(t, c, 1)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if c.Updates() != 1 || c.Failures() != 0 {
		t.Fatalf("updates %d failures %d", c.Updates(), c.Failures())
	}
}

func TestBackgroundRefreshPastRefreshAfter(t *testing.T) {
	c, src, clk := newCache(t)
	mustCurrent(t, c, 1)
	src.set(2, nil)
	clk.Advance(refresh - time.Nanosecond)
	mustCurrent(t, c, 1)
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("refreshed before RefreshAfter: %d fetches", n)
	}
	clk.Advance(time.Nanosecond)
	mustCurrent(t, c, 1) // served while the refresh runs in the background
	waitFor(t, "background refresh", func() bool { return c.Updates() == 2 })
	mustCurrent(t, c, 2)
}

func TestStaleBound(t *testing.T) {
	c, src, clk := newCache(t)
	mustCurrent(t, c, 1)
	src.set(0, errDownstream)
	clk.Advance(refresh)
	mustCurrent(t, c, 1)
	waitFor(t, "failed refresh", func() bool { return c.Failures() == 1 })
	if !errors.Is(c.LastError(), errDownstream) {
		t.Fatalf("LastError = %v", c.LastError())
	}
	clk.Advance(maxStale - refresh - time.Nanosecond)
	mustCurrent(t, c, 1) // the last instant within MaxStale
	waitFor(t, "second failed refresh", func() bool { return c.Failures() == 2 })

	clk.Advance(time.Nanosecond)
	_, err := c.Current(t.Context())
	if !errors.Is(err, errDown) || !errors.Is(err, errDownstream) || !strings.Contains(err.Error(), "test source: keys older than 1h0m0s and refresh failing") {
		t.Fatalf("stale: got %v", err)
	}
	// Recovery once the source is back.
	src.set(3, nil)
	clk.Advance(minInterval)
	mustCurrent(t, c, 3)
}

var errDownstream = errors.New("source answered 500")

func TestNeverStale(t *testing.T) {
	c, src, clk := newCache(t, func(cfg *Config[int]) { cfg.MaxStale = 0 })
	mustCurrent(t, c, 1)
	src.set(0, errDownstream)
	clk.Advance(100 * 365 * 24 * time.Hour)
	mustCurrent(t, c, 1)
}

func TestFirstFetchFails(t *testing.T) {
	c, src, clk := newCache(t)
	src.set(0, errDownstream)
	_, err := c.Current(t.Context())
	if !errors.Is(err, errDown) || !errors.Is(err, errDownstream) {
		t.Fatalf("got %v", err)
	}
	// Within MinInterval the source is not asked again.
	if _, err := c.Current(t.Context()); !errors.Is(err, errDownstream) {
		t.Fatalf("got %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d fetches within MinInterval, want 1", n)
	}
	src.set(1, nil)
	clk.Advance(minInterval)
	mustCurrent(t, c, 1)
}

func TestRefreshRateLimited(t *testing.T) {
	c, src, clk := newCache(t)
	mustCurrent(t, c, 1)
	seen := c.Load()
	src.set(2, nil)
	for range 20 {
		v, err := c.Refresh(t.Context(), seen)
		if err != nil || v != seen {
			t.Fatalf("Refresh within MinInterval = %v, %v; want the value seen", v, err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	clk.Advance(minInterval - time.Nanosecond)
	if v, _ := c.Refresh(t.Context(), seen); v != seen {
		t.Fatal("refreshed before MinInterval")
	}
	clk.Advance(time.Nanosecond)
	v, err := c.Refresh(t.Context(), seen)
	if err != nil || v == seen || v.V != 2 {
		t.Fatalf("Refresh after MinInterval = %v, %v", v, err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestSingleFlight(t *testing.T) {
	c, src, clk := newCache(t)
	mustCurrent(t, c, 1)
	clk.Advance(minInterval)
	gate := make(chan struct{})
	src.mu.Lock()
	src.version, src.gate = 2, gate
	src.mu.Unlock()
	seen := c.Load()
	const n = 100
	var wg sync.WaitGroup
	got := make([]int, n)
	for i := range n {
		wg.Go(func() {
			v, err := c.Refresh(context.Background(), seen)
			if err == nil {
				got[i] = v.V
			}
		})
	}
	waitFor(t, "the fetch to start", func() bool { return src.calls.Load() == 2 })
	close(gate)
	wg.Wait()
	for i, v := range got {
		if v != 2 {
			t.Fatalf("caller %d got %d, want 2", i, v)
		}
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("%d fetches for concurrent refreshes, want 2 (one shared)", n)
	}
}

func TestCallerCancellationDoesNotAbortFetch(t *testing.T) {
	c, src, _ := newCache(t)
	gate := make(chan struct{})
	src.gate = gate
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := c.Current(ctx)
	if !errors.Is(err, errDown) || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "waiting for keys") {
		t.Fatalf("got %v", err)
	}
	close(gate)
	waitFor(t, "shared fetch", func() bool { return c.Updates() == 1 })
	mustCurrent(t, c, 1)
}

func TestFetchTimeout(t *testing.T) {
	c, src, _ := newCache(t, func(cfg *Config[int]) { cfg.Timeout = 20 * time.Millisecond })
	src.gate = make(chan struct{}) // never opens
	start := time.Now()
	_, err := c.Current(t.Context())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("fetch ran %v", d)
	}
}

func TestAcceptRefusesKeepsLastGood(t *testing.T) {
	var failures []error
	c, src, clk := newCache(t, func(cfg *Config[int]) {
		cfg.Accept = func(old *Value[int], v int) error {
			if old != nil && v < old.V {
				return fmt.Errorf("version %d after %d", v, old.V)
			}
			return nil
		}
		cfg.OnFailure = func(err error) { failures = append(failures, err) }
	})
	mustCurrent(t, c, 1)
	src.set(0, nil)
	clk.Advance(minInterval)
	if v, _ := c.Refresh(t.Context(), c.Load()); v.V != 1 {
		t.Fatalf("refused value installed: %d", v.V)
	}
	if c.Failures() != 1 || len(failures) != 1 || !strings.Contains(failures[0].Error(), "version 0 after 1") {
		t.Fatalf("failures %d %v", c.Failures(), failures)
	}
}

func TestOnUpdate(t *testing.T) {
	var seen [][2]int
	c, src, clk := newCache(t, func(cfg *Config[int]) {
		cfg.OnUpdate = func(old, cur *Value[int]) {
			o := -1
			if old != nil {
				o = old.V
			}
			seen = append(seen, [2]int{o, cur.V})
		}
	})
	mustCurrent(t, c, 1)
	src.set(2, nil)
	clk.Advance(minInterval)
	_, _ = c.Refresh(t.Context(), c.Load())
	if len(seen) != 2 || seen[0] != [2]int{-1, 1} || seen[1] != [2]int{1, 2} {
		t.Fatalf("OnUpdate calls %v", seen)
	}
}

func TestLongErrorsShortened(t *testing.T) {
	c, src, _ := newCache(t)
	src.set(0, errors.New(strings.Repeat("é", 1000)))
	_, err := c.Current(t.Context())
	if err == nil || len(c.LastError().Error()) > maxErrorText+3 || !strings.HasSuffix(c.LastError().Error(), "...") {
		t.Fatalf("LastError of %d bytes", len(c.LastError().Error()))
	}
}

func TestPushedSource(t *testing.T) {
	c, _, clk := newCache(t, func(cfg *Config[int]) { cfg.Fetch = nil; cfg.Noun = "bundle" })
	_, err := c.Current(t.Context())
	if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "no bundle received yet") {
		t.Fatalf("before any push: %v", err)
	}
	c.Lagging(clk.Now(), errDownstream)
	if _, err := c.Current(t.Context()); !errors.Is(err, errDownstream) {
		t.Fatalf("after a connection error: %v", err)
	}
	c.Set(5, nil)
	c.Lagging(time.Time{}, nil)
	mustCurrent(t, c, 5)
	// A pushed value does not age while current: its source pushes updates.
	clk.Advance(10 * maxStale)
	mustCurrent(t, c, 5)
	if v, err := c.Refresh(t.Context(), c.Load()); err != nil || v.V != 5 {
		t.Fatalf("Refresh of a pushed source = %v, %v", v, err)
	}
	c.Set(0, errors.New("refused update"))
	mustCurrent(t, c, 5)
	if c.Updates() != 1 || c.Failures() != 1 {
		t.Fatalf("updates %d failures %d", c.Updates(), c.Failures())
	}
	if !c.Drop(errors.New("withdrawn")) {
		t.Fatal("Drop reported no value")
	}
	if _, err := c.Current(t.Context()); err == nil || !strings.Contains(err.Error(), "withdrawn") {
		t.Fatalf("after Drop: %v", err)
	}
}

// A pushed value that may be behind its source (connection lost, update refused)
// is usable up to MaxStale after it started lagging, then fails closed; it is
// current again once the source says so.
func TestPushedSourceLagging(t *testing.T) {
	c, _, clk := newCache(t, func(cfg *Config[int]) { cfg.Fetch = nil; cfg.Noun = "bundle" })
	c.Set(5, nil)
	clk.Advance(10 * maxStale)
	mustCurrent(t, c, 5)
	c.Lagging(clk.Now(), errDownstream)
	if !c.LaggingSince().Equal(clk.Now()) {
		t.Fatalf("LaggingSince = %v", c.LaggingSince())
	}
	clk.Advance(maxStale - time.Second)
	mustCurrent(t, c, 5)
	clk.Advance(time.Second)
	_, err := c.Current(t.Context())
	if !errors.Is(err, errDown) || !errors.Is(err, errDownstream) || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("after lagging for MaxStale: %v", err)
	}
	c.Lagging(time.Time{}, nil) // reconnected: the value held is current again
	mustCurrent(t, c, 5)
	if !c.LaggingSince().IsZero() {
		t.Fatalf("LaggingSince = %v once current", c.LaggingSince())
	}
	// Without MaxStale a lagging value stays usable.
	c2, _, clk2 := newCache(t, func(cfg *Config[int]) { cfg.Fetch = nil; cfg.MaxStale = 0 })
	c2.Set(6, nil)
	c2.Lagging(clk2.Now(), errDownstream)
	clk2.Advance(10 * maxStale)
	mustCurrent(t, c2, 6)
}

func TestStoreAndClose(t *testing.T) {
	c, src, clk := newCache(t)
	c.Store(7)
	mustCurrent(t, c, 7)
	if src.calls.Load() != 0 || c.Updates() != 0 {
		t.Fatal("Store fetched or counted")
	}
	c.Close()
	c.Close()
	clk.Advance(time.Hour)
	_, err := c.Current(t.Context())
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	c.Set(8, nil)
	if c.Load() != nil {
		t.Fatal("Set after Close installed a value")
	}
}

func TestStopKeepsValue(t *testing.T) {
	c, src, clk := newCache(t, func(cfg *Config[int]) { cfg.MaxStale = 0 })
	mustCurrent(t, c, 1)
	c.Stop()
	clk.Advance(time.Hour)
	mustCurrent(t, c, 1)
	if v, err := c.Refresh(t.Context(), c.Load()); err != nil || v.V != 1 {
		t.Fatalf("Refresh after Stop = %v, %v", v, err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("%d fetches after Stop", n-1)
	}
}
