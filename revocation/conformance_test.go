package revocation

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock shared by a test and the store under test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	// Near the real time: the Redis backend hands expiries to the server, whose clock
	// is real.
	return &fakeClock{now: time.Now()}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// opener opens a fresh, empty store using now as its clock; the store is closed when
// t ends.
type opener func(t *testing.T, now func() time.Time) Store

// runConformance checks the behaviour every Store backend must share.
func runConformance(t *testing.T, open opener) {
	setup := func(t *testing.T) (context.Context, Store, *fakeClock) {
		clock := newFakeClock()
		return t.Context(), open(t, clock.Now), clock
	}

	t.Run("revoked token is reported", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.RevokeToken(ctx, "jti-1", clock.Now().Add(time.Hour), "key compromise"); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		assertRevoked(t, s, "jti-1", true)
		assertRevoked(t, s, "jti-2", false)
		assertRevoked(t, s, "jti-", false)
	})

	t.Run("unknown token is not revoked", func(t *testing.T) {
		_, s, _ := setup(t)
		assertRevoked(t, s, "never-seen", false)
	})

	// Entries end at until; a backend may keep milliseconds, rounding up (Redis), so
	// the suite looks one millisecond either side.
	t.Run("revocation expires at until", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.RevokeToken(ctx, "jti-1", clock.Now().Add(time.Minute), ""); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		clock.Advance(time.Minute - time.Millisecond)
		assertRevoked(t, s, "jti-1", true)
		clock.Advance(2 * time.Millisecond)
		assertRevoked(t, s, "jti-1", false)
		clock.Advance(time.Hour)
		assertRevoked(t, s, "jti-1", false)
	})

	t.Run("blocked subject is refused with the reason", func(t *testing.T) {
		ctx, s, clock := setup(t)
		until := clock.Now().Add(time.Hour)
		if err := s.BlockSubject(ctx, "corp", "spiffe://example.org/ns/a/sa/b", until, "stolen node"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		err := s.Admit(ctx, Query{Upstream: "corp", Subject: "spiffe://example.org/ns/a/sa/b"})
		if !errors.Is(err, ErrBlocked) {
			t.Fatalf("Admit = %v, want ErrBlocked", err)
		}
		if errors.Is(err, ErrInvalid) {
			t.Errorf("Admit = %v, also ErrInvalid", err)
		}
		var be *BlockedError
		if !errors.As(err, &be) {
			t.Fatalf("Admit = %v (%T), want a *BlockedError", err, err)
		}
		if be.Reason != "stolen node" || !strings.Contains(err.Error(), "stolen node") {
			t.Errorf("Admit = %q, reason %q; want reason %q", err, be.Reason, "stolen node")
		}
		// Backends may round the expiry up (Redis keeps milliseconds), never down.
		if d := be.Until.Sub(until); d < 0 || d >= time.Millisecond {
			t.Errorf("BlockedError.Until = %v, want %v (rounded up to the ms at most)", be.Until, until)
		}
	})

	t.Run("block is scoped to upstream and subject", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.BlockSubject(ctx, "corp", "alice", clock.Now().Add(time.Hour), "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		assertAdmit(t, s, "corp", "alice", true)
		assertAdmit(t, s, "corp", "bob", false)
		assertAdmit(t, s, "partner", "alice", false)
		assertAdmit(t, s, "corp", "Alice", false)
		assertAdmit(t, s, "corp", "alice ", false)
	})

	t.Run("upstream and subject never run together", func(t *testing.T) {
		ctx, s, clock := setup(t)
		later := clock.Now().Add(time.Hour)
		if err := s.BlockSubject(ctx, "a", "bc", later, "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		if err := s.BlockSubject(ctx, "x", "y\x00z", later, "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		assertAdmit(t, s, "a", "bc", true)
		assertAdmit(t, s, "ab", "c", false)
		if err := s.Admit(ctx, Query{Upstream: "abc", Subject: ""}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Admit(abc, \"\") = %v, want ErrInvalid", err)
		}
		assertAdmit(t, s, "x", "y\x00z", true)
		assertAdmit(t, s, "x", "y", false)
		assertAdmit(t, s, "x", "y\x00", false)
	})

	t.Run("odd subjects are stored exactly", func(t *testing.T) {
		ctx, s, clock := setup(t)
		subjects := []string{
			"{rev}", "a}b{c", "sc:{rev}:block:x", "with space", "tab\tnewline\n", "ünïcödé",
			"\xff\xfe not utf-8", "*", "?", "[a-z]", strings.Repeat("s", MaxSubjectLen),
		}
		for _, sub := range subjects {
			if err := s.BlockSubject(ctx, "corp", sub, clock.Now().Add(time.Hour), "odd"); err != nil {
				t.Fatalf("BlockSubject(%q): %v", sub, err)
			}
		}
		for _, sub := range subjects {
			assertAdmit(t, s, "corp", sub, true)
		}
		assertAdmit(t, s, "corp", "a}b{", false)
		assertAdmit(t, s, "corp", strings.Repeat("s", MaxSubjectLen-1), false)
	})

	t.Run("block expires at until", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.BlockSubject(ctx, "corp", "alice", clock.Now().Add(time.Minute), "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		clock.Advance(time.Minute - time.Millisecond)
		assertAdmit(t, s, "corp", "alice", true)
		clock.Advance(2 * time.Millisecond)
		assertAdmit(t, s, "corp", "alice", false)
	})

	t.Run("a later write never shortens an entry", func(t *testing.T) {
		ctx, s, clock := setup(t)
		now := clock.Now()
		if err := s.RevokeToken(ctx, "jti-1", now.Add(2*time.Hour), "first"); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		if err := s.RevokeToken(ctx, "jti-1", now.Add(time.Hour), "second"); err != nil {
			t.Fatalf("RevokeToken (shorter): %v", err)
		}
		if err := s.BlockSubject(ctx, "corp", "alice", now.Add(2*time.Hour), "first"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		if err := s.BlockSubject(ctx, "corp", "alice", now.Add(time.Hour), "second"); err != nil {
			t.Fatalf("BlockSubject (shorter): %v", err)
		}
		// A longer write extends and replaces the reason.
		if err := s.BlockSubject(ctx, "corp", "bob", now.Add(time.Hour), "first"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		if err := s.BlockSubject(ctx, "corp", "bob", now.Add(3*time.Hour), "extended"); err != nil {
			t.Fatalf("BlockSubject (longer): %v", err)
		}
		clock.Advance(90 * time.Minute)
		assertRevoked(t, s, "jti-1", true)
		if reason := assertAdmit(t, s, "corp", "alice", true); reason != "first" {
			t.Errorf("reason = %q, want the longer block's %q", reason, "first")
		}
		if reason := assertAdmit(t, s, "corp", "bob", true); reason != "extended" {
			t.Errorf("reason = %q, want %q", reason, "extended")
		}
	})

	t.Run("invalid arguments are refused", func(t *testing.T) {
		ctx, s, clock := setup(t)
		now := clock.Now()
		later := now.Add(time.Hour)
		long := func(n int) string { return strings.Repeat("x", n) }
		cases := []struct {
			name string
			call func() error
		}{
			{"revoke empty jti", func() error { return s.RevokeToken(ctx, "", later, "r") }},
			{"revoke long jti", func() error { return s.RevokeToken(ctx, long(MaxJTILen+1), later, "r") }},
			{"revoke jti with space", func() error { return s.RevokeToken(ctx, "a b", later, "r") }},
			{"revoke jti with newline", func() error { return s.RevokeToken(ctx, "a\nb", later, "r") }},
			{"revoke jti with NUL", func() error { return s.RevokeToken(ctx, "a\x00b", later, "r") }},
			{"revoke non-ASCII jti", func() error { return s.RevokeToken(ctx, "jtï", later, "r") }},
			{"revoke until now", func() error { return s.RevokeToken(ctx, "j", now, "r") }},
			{"revoke until past", func() error { return s.RevokeToken(ctx, "j", now.Add(-time.Second), "r") }},
			{"revoke zero until", func() error { return s.RevokeToken(ctx, "j", time.Time{}, "r") }},
			{"revoke long reason", func() error { return s.RevokeToken(ctx, "j", later, long(MaxReasonLen+1)) }},
			{"revoked empty jti", func() error { _, err := s.TokenRevoked(ctx, ""); return err }},
			{"revoked long jti", func() error { _, err := s.TokenRevoked(ctx, long(MaxJTILen+1)); return err }},
			{"block empty upstream", func() error { return s.BlockSubject(ctx, "", "alice", later, "r") }},
			{"block empty subject", func() error { return s.BlockSubject(ctx, "corp", "", later, "r") }},
			{"block upstream with NUL", func() error { return s.BlockSubject(ctx, "co\x00rp", "alice", later, "r") }},
			{"block upstream with newline", func() error { return s.BlockSubject(ctx, "corp\n", "alice", later, "r") }},
			{"block long upstream", func() error { return s.BlockSubject(ctx, long(MaxUpstreamLen+1), "alice", later, "r") }},
			{"block long subject", func() error { return s.BlockSubject(ctx, "corp", long(MaxSubjectLen+1), later, "r") }},
			{"block until now", func() error { return s.BlockSubject(ctx, "corp", "alice", now, "r") }},
			{"block long reason", func() error { return s.BlockSubject(ctx, "corp", "alice", later, long(MaxReasonLen+1)) }},
			{"admit empty upstream", func() error { return s.Admit(ctx, Query{Subject: "alice"}) }},
			{"admit empty subject", func() error { return s.Admit(ctx, Query{Upstream: "corp"}) }},
			{"admit upstream with NUL", func() error { return s.Admit(ctx, Query{Upstream: "a\x00", Subject: "b"}) }},
			{"admit long subject", func() error { return s.Admit(ctx, Query{Upstream: "corp", Subject: long(MaxSubjectLen + 1)}) }},
		}
		for _, tc := range cases {
			if err := tc.call(); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", tc.name, err)
			}
		}
		// Refused writes left nothing behind.
		assertRevoked(t, s, "j", false)
		assertAdmit(t, s, "corp", "alice", false)
	})

	t.Run("values at the size limits are accepted", func(t *testing.T) {
		ctx, s, clock := setup(t)
		later := clock.Now().Add(time.Hour)
		jti := strings.Repeat("j", MaxJTILen)
		up, sub, reason := strings.Repeat("u", MaxUpstreamLen), strings.Repeat("s", MaxSubjectLen), strings.Repeat("r", MaxReasonLen)
		if err := s.RevokeToken(ctx, jti, later, reason); err != nil {
			t.Fatalf("RevokeToken: %v", err)
		}
		if err := s.BlockSubject(ctx, up, sub, later, reason); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		assertRevoked(t, s, jti, true)
		if got := assertAdmit(t, s, up, sub, true); got != reason {
			t.Errorf("reason has %d bytes, want %d", len(got), len(reason))
		}
	})

	t.Run("concurrent revokes are all visible", func(t *testing.T) {
		ctx, s, clock := setup(t)
		const workers, each = 8, 20
		later := clock.Now().Add(time.Hour)
		var wg sync.WaitGroup
		errs := make(chan error, workers*each*2)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					if err := s.RevokeToken(ctx, fmt.Sprintf("w%d-%d", w, i), later, "bulk"); err != nil {
						errs <- err
					}
					// Reads interleave with the writes.
					if err := s.Admit(ctx, Query{Upstream: "corp", Subject: fmt.Sprintf("w%d", w)}); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent call: %v", err)
		}
		for w := range workers {
			for i := range each {
				assertRevoked(t, s, fmt.Sprintf("w%d-%d", w, i), true)
			}
		}
	})

	t.Run("canceled context is an error, never an admission", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.BlockSubject(ctx, "corp", "alice", clock.Now().Add(time.Hour), "r"); err != nil {
			t.Fatalf("BlockSubject: %v", err)
		}
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		for _, sub := range []string{"alice", "bob"} {
			if err := s.Admit(canceled, Query{Upstream: "corp", Subject: sub}); err == nil || errors.Is(err, ErrInvalid) {
				t.Errorf("Admit(%s) with canceled context = %v, want a store error", sub, err)
			}
		}
		if _, err := s.TokenRevoked(canceled, "jti-1"); err == nil {
			t.Error("TokenRevoked with canceled context: nil error")
		}
		if err := s.RevokeToken(canceled, "jti-1", clock.Now().Add(time.Hour), "r"); err == nil {
			t.Error("RevokeToken with canceled context: nil error")
		}
	})

	t.Run("ping", func(t *testing.T) {
		ctx, s, _ := setup(t)
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})

	t.Run("closed store fails closed", func(t *testing.T) {
		ctx, s, clock := setup(t)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := s.Admit(ctx, Query{Upstream: "corp", Subject: "alice"}); err == nil {
			t.Error("Admit after Close: nil error")
		}
		if _, err := s.TokenRevoked(ctx, "jti-1"); err == nil {
			t.Error("TokenRevoked after Close: nil error")
		}
		if err := s.RevokeToken(ctx, "jti-1", clock.Now().Add(time.Hour), "r"); err == nil {
			t.Error("RevokeToken after Close: nil error")
		}
		if err := s.Ping(ctx); err == nil {
			t.Error("Ping after Close: nil error")
		}
	})
}

func assertRevoked(t *testing.T, s Store, jti string, want bool) {
	t.Helper()
	got, err := s.TokenRevoked(t.Context(), jti)
	if err != nil {
		t.Fatalf("TokenRevoked(%q): %v", jti, err)
	}
	if got != want {
		t.Errorf("TokenRevoked(%q) = %v, want %v", jti, got, want)
	}
}

// assertAdmit checks whether (upstream, subject) is blocked and returns the reason.
func assertAdmit(t *testing.T, s Store, upstream, subject string, wantBlocked bool) string {
	t.Helper()
	err := s.Admit(t.Context(), Query{Upstream: upstream, Subject: subject})
	var be *BlockedError
	switch {
	case wantBlocked && errors.As(err, &be) && errors.Is(err, ErrBlocked):
		return be.Reason
	case !wantBlocked && err == nil:
		return ""
	default:
		t.Errorf("Admit(%q, %q) = %v, want blocked=%v", upstream, subject, err, wantBlocked)
		return ""
	}
}
