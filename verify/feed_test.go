package verify

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

func TestRevoked(t *testing.T) {
	cases := []struct {
		name     string
		selector string
		// revoked is minted before the entry and matches it; spared does not match.
		revoked, spared func(c map[string]any)
	}{
		{"by jti", "jti=jti-target",
			func(c map[string]any) { c["jti"] = "jti-target" },
			func(c map[string]any) { c["jti"] = "jti-other" }},
		{"by sub", "sub=spiffe://example.org/ns/payments/sa/api",
			func(map[string]any) {},
			func(c map[string]any) { c["sub"] = "spiffe://example.org/ns/payments/sa/worker" }},
		{"by glob", "upstream=corp,sub=spiffe://example.org/ns/payments/*",
			func(c map[string]any) { c["sub"] = "spiffe://example.org/ns/payments/sa/batch" },
			func(c map[string]any) { c["sub"] = "spiffe://example.org/ns/billing/sa/api" }},
		{"by attr", "upstream=corp,attr.namespace=payments",
			func(map[string]any) {},
			func(c map[string]any) { c["attributes"] = map[string]any{"namespace": "billing"} }},
		{"by bnd", "bnd=bnd-fingerprint-1",
			func(map[string]any) {},
			func(c map[string]any) { c["bnd"] = "bnd-fingerprint-2" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts := newFakeSTS(t)
			v := sts.verifier(t)
			revoked, spared := sts.mint(t, tc.revoked), sts.mint(t, tc.spared)
			if _, err := v.Verify(t.Context(), revoked); err != nil {
				t.Fatalf("before the entry: Verify = %v", err)
			}
			_, cursor := sts.feed.create("revoke", tc.selector)
			waitCursor(t, v, cursor)
			_, err := v.Verify(t.Context(), revoked)
			wantErr(t, "matching token", err, ErrRevoked)
			if errors.Is(err, ErrInvalid) || errors.Is(err, ErrStale) {
				t.Errorf("revoked: err = %v, also invalid or stale", err)
			}
			_, err = v.Verify(t.Context(), spared)
			wantErr(t, "other token", err, nil)
			if st := v.Status(); st.Entries != 1 || !st.Synced || st.Stale {
				t.Errorf("Status = %+v, want 1 entry, synced, fresh", st)
			}
		})
	}
}

func TestRevokedInSnapshot(t *testing.T) {
	sts := newFakeSTS(t)
	raw := sts.mint(t, func(c map[string]any) { c["jti"] = "early" })
	sts.feed.create("revoke", "jti=early")
	sts.feed.create("block", "upstream=corp,sub=spiffe://example.org/ns/payments/sa/api")
	v := sts.verifier(t)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "revoked before start", err, ErrRevoked)
	if _, err := v.Verify(t.Context(), sts.mint(t)); err != nil {
		t.Errorf("a block must not refuse existing tokens: Verify = %v", err)
	}
	if st := v.Status(); st.Entries != 1 || st.Cursor != "2" {
		t.Errorf("Status = %+v, want 1 entry (the block ignored) at cursor 2", st)
	}
}

func TestBlockIgnored(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t)
	_, cursor := sts.feed.create("block", "upstream=corp,sub=spiffe://example.org/ns/payments/sa/api")
	waitCursor(t, v, cursor)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("Verify after a block = %v, want nil", err)
	}
}

func TestLifted(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t, func(c map[string]any) { c["jti"] = "lift-me" })
	e, cursor := sts.feed.create("revoke", "jti=lift-me")
	waitCursor(t, v, cursor)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "revoked", err, ErrRevoked)
	waitCursor(t, v, sts.feed.lift(e.ID))
	_, err = v.Verify(t.Context(), raw)
	wantErr(t, "after lift", err, nil)
	if n := v.Status().Entries; n != 0 {
		t.Errorf("Entries = %d after lift, want 0", n)
	}
}

func TestIssuedAfterRevoke(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	before := sts.mint(t)
	_, cursor := sts.feed.create("revoke", "sub=spiffe://example.org/ns/payments/sa/api")
	waitCursor(t, v, cursor)
	sameSecond := sts.mint(t) // iat == created (seconds): revoked too
	sts.clock.Advance(time.Second)
	after := sts.mint(t)

	_, err := v.Verify(t.Context(), before)
	wantErr(t, "minted before the revoke", err, ErrRevoked)
	_, err = v.Verify(t.Context(), sameSecond)
	wantErr(t, "minted in the revoke's second", err, ErrRevoked)
	_, err = v.Verify(t.Context(), after)
	wantErr(t, "minted after the revoke", err, nil)
}

func TestEntryExpires(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t, func(c *Config) { c.MaxStale = 2 * time.Hour })
	raw := sts.mint(t, func(c map[string]any) {
		c["jti"] = "long"
		c["exp"] = sts.clock.Now().Add(3 * time.Hour).Unix()
	})
	_, cursor := sts.feed.create("revoke", "jti=long") // expires in an hour
	waitCursor(t, v, cursor)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "revoked", err, ErrRevoked)
	sts.clock.Advance(time.Hour)
	_, err = v.Verify(t.Context(), raw)
	wantErr(t, "after the entry expired", err, nil)
	sts.feed.heartbeat() // heartbeats sweep expired entries
	waitFor(t, "sweep", func() bool { return v.Status().Entries == 0 })
}

func TestEntryOutlivesTokensWithLeeway(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t, func(c *Config) { c.MaxStale, c.Leeway = 2*time.Hour, 30*time.Second })
	e, cursor := sts.feed.create("revoke", "jti=edge")
	waitCursor(t, v, cursor)
	// A token whose exp is the entry's expiry, verified 10 s after it: still within
	// the leeway, so the entry must still be in force.
	raw := sts.mint(t, func(c map[string]any) {
		c["jti"] = "edge"
		c["exp"] = e.Expires / 1000
	})
	sts.clock.Advance(time.Hour + 10*time.Second)
	sts.feed.heartbeat() // prunes expired entries: not this one yet
	waitFor(t, "heartbeat", func() bool { return v.Status().LastContact.Equal(sts.clock.Now()) })
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "within leeway past the entry's expiry", err, ErrRevoked)
}

func TestUnreadableEntryFailsClosed(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t)
	// An entry this verifier cannot apply (a selector it does not understand, say
	// from a newer STS) stops the copy instead of being skipped.
	sts.feed.create("revoke", "color=blue")
	waitFor(t, "the feed to stop", func() bool {
		err := v.Status().LastError
		return err != nil && strings.Contains(err.Error(), "snapshot")
	})
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("within MaxStale: Verify = %v", err)
	}
	sts.clock.Advance(DefaultMaxStale + time.Second)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "after MaxStale", err, ErrStale)

	// And a verifier starting now never syncs.
	v2, err := New(t.Context(), sts.config(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v2.Close() })
	waitFor(t, "a snapshot error", func() bool { return v2.Status().LastError != nil })
	_, err = v2.Verify(t.Context(), raw)
	wantErr(t, "fresh verifier", err, ErrStale)
}

func TestStreamIdleReconnects(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t, func(c *Config) { c.streamIdle = 50 * time.Millisecond })
	_, cursor := sts.feed.create("revoke", "jti=x")
	waitCursor(t, v, cursor)
	// The fake sends nothing more: the verifier must give up on the silent
	// connection and resume from its cursor.
	waitFor(t, "reconnects", func() bool {
		_, streams := sts.feed.counts()
		return len(streams) >= 3 && streams[len(streams)-1].LastEventID == cursor
	})
	if snapshots, _ := sts.feed.counts(); snapshots != 1 {
		t.Errorf("%d snapshots, want 1", snapshots)
	}
}

func TestStreamResumesFromCursor(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	_, c1 := sts.feed.create("revoke", "jti=one")
	waitCursor(t, v, c1)

	release := sts.feed.hold()
	sts.feed.dropStreams()
	_, before := sts.feed.counts()
	waitFor(t, "a reconnect", func() bool { _, s := sts.feed.counts(); return len(s) > len(before) })
	raw := sts.mint(t, func(c map[string]any) { c["jti"] = "two" })
	_, c2 := sts.feed.create("revoke", "jti=two") // while disconnected
	release()
	waitCursor(t, v, c2)

	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "revoked while disconnected", err, ErrRevoked)
	snapshots, streams := sts.feed.counts()
	if snapshots != 1 {
		t.Errorf("%d snapshots, want 1 (resumed, not resynchronized)", snapshots)
	}
	last := streams[len(before)]
	if last.LastEventID != c1 || last.Cursor != c1 {
		t.Errorf("reconnect sent Last-Event-ID %q, cursor %q; want %q", last.LastEventID, last.Cursor, c1)
	}
	if first := streams[0]; first.LastEventID != "" || first.Cursor != "" {
		t.Errorf("first stream sent Last-Event-ID %q, cursor %q; want the snapshot's empty cursor", first.LastEventID, first.Cursor)
	}
}

func TestCursorExpiredResnapshots(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	lifted, c1 := sts.feed.create("revoke", "jti=one")
	waitCursor(t, v, c1)

	release := sts.feed.hold()
	sts.feed.dropStreams()
	liftedTok := sts.mint(t, func(c map[string]any) { c["jti"] = "one" })
	revokedTok := sts.mint(t, func(c map[string]any) { c["jti"] = "two" })
	sts.feed.lift(lifted.ID)
	sts.feed.create("revoke", "jti=two")
	_, c4 := sts.feed.create("revoke", "jti=three")
	n, _ := strconv.Atoi(c4)
	sts.feed.forget(n) // the verifier's cursor is no longer retained: 410
	release()
	waitCursor(t, v, c4)

	_, err := v.Verify(t.Context(), liftedTok)
	wantErr(t, "lifted during the gap", err, nil)
	_, err = v.Verify(t.Context(), revokedTok)
	wantErr(t, "revoked during the gap", err, ErrRevoked)
	if snapshots, _ := sts.feed.counts(); snapshots != 2 {
		t.Errorf("%d snapshots, want 2 (the 410 forces a new one)", snapshots)
	}
	if st := v.Status(); st.Entries != 2 {
		t.Errorf("Status = %+v, want 2 entries", st)
	}
}

func TestStale(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t)
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Fatalf("fresh: Verify = %v", err)
	}
	sts.clock.Advance(DefaultMaxStale) // exactly MaxStale: still fresh
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Fatalf("at MaxStale: Verify = %v", err)
	}
	sts.clock.Advance(time.Second)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "no heartbeat for MaxStale", err, ErrStale)
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrRevoked) {
		t.Errorf("stale: err = %v, also invalid or revoked", err)
	}
	if st := v.Status(); !st.Stale || !st.Synced {
		t.Errorf("Status = %+v, want stale and synced", st)
	}

	sts.feed.heartbeat()
	waitFor(t, "heartbeat", func() bool { return !v.Status().Stale })
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("after a heartbeat: Verify = %v", err)
	}
}

func TestStaleRevokedIsRevoked(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t, func(c map[string]any) { c["jti"] = "r" })
	_, cursor := sts.feed.create("revoke", "jti=r")
	waitCursor(t, v, cursor)
	sts.clock.Advance(DefaultMaxStale + time.Second)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "known revoked while stale", err, ErrRevoked)
}

func TestFeedAuthFailureIsStale(t *testing.T) {
	sts := newFakeSTS(t)
	var credential atomic.Value
	credential.Store("wrong")
	var calls atomic.Int64
	cfg := sts.config(t)
	cfg.FeedToken = func(context.Context) (string, error) {
		calls.Add(1)
		return credential.Load().(string), nil
	}
	v, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	waitFor(t, "a feed error", func() bool { return calls.Load() >= 3 && v.Status().LastError != nil })
	st := v.Status()
	if st.Synced || !st.Stale || !strings.Contains(st.LastError.Error(), "401") {
		t.Errorf("Status = %+v, want not synced, stale, a 401 error", st)
	}
	raw := sts.mint(t)
	_, err = v.Verify(t.Context(), raw)
	wantErr(t, "feed refused", err, ErrStale)

	// The credential is asked for again on every attempt: a rotated one works.
	credential.Store(testFeedToken)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.WaitSynced(ctx); err != nil {
		t.Fatalf("WaitSynced after the credential is fixed: %v", err)
	}
	if _, err := v.Verify(t.Context(), raw); err != nil {
		t.Errorf("after sync: Verify = %v", err)
	}
}

func TestFeedAuthLostLaterGoesStale(t *testing.T) {
	sts := newFakeSTS(t)
	v := sts.verifier(t)
	raw := sts.mint(t)
	sts.feed.setToken("rotated-away")
	sts.feed.dropStreams()
	waitFor(t, "a 401", func() bool {
		err := v.Status().LastError
		return err != nil && strings.Contains(err.Error(), "401")
	})
	sts.clock.Advance(DefaultMaxStale + time.Second)
	_, err := v.Verify(t.Context(), raw)
	wantErr(t, "feed refused for MaxStale", err, ErrStale)
}

func TestFeedCredentialError(t *testing.T) {
	sts := newFakeSTS(t)
	cfg := sts.config(t)
	cfg.FeedToken = func(context.Context) (string, error) { return "", errors.New("token file missing") }
	v, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	waitFor(t, "a feed error", func() bool { return v.Status().LastError != nil })
	_, err = v.Verify(t.Context(), sts.mint(t))
	wantErr(t, "no credential", err, ErrStale)
	if err == nil || !strings.Contains(err.Error(), "token file missing") {
		t.Errorf("Verify = %v, want the credential error as detail", err)
	}
}

func TestFeedApply(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	newTestFeed := func() *feed {
		return &feed{now: func() time.Time { return now }, index: revocation.NewIndex(), cursor: "1", synced: true, syncedCh: make(chan struct{})}
	}
	entry := `{"id":"e1","kind":"revoke","selector":"jti=x","reason":"","actor":"a","created":1700000000000,"expires":0,"lifted":false}`
	for _, tc := range []struct {
		name   string
		ev     sseEvent
		resync bool
	}{
		{"created", sseEvent{ID: "2", Type: "created", Data: []byte(entry)}, false},
		{"created without id", sseEvent{ID: "", Type: "created", Data: []byte(entry)}, true},
		{"created with a malformed entry", sseEvent{ID: "2", Type: "created", Data: []byte(`{"id":`)}, true},
		{"created with a bad selector", sseEvent{ID: "2", Type: "created", Data: []byte(strings.Replace(entry, "jti=x", "", 1))}, true},
		{"created without entry id", sseEvent{ID: "2", Type: "created", Data: []byte(`{"kind":"revoke","selector":"jti=x"}`)}, true},
		{"cursor with a space", sseEvent{ID: "2 3", Type: "created", Data: []byte(entry)}, true},
		{"unknown event that moved the cursor", sseEvent{ID: "2", Type: "amended", Data: []byte(entry)}, true},
		{"unknown event without id", sseEvent{ID: "1", Type: "ping", Data: []byte("x")}, false},
		{"a block with an unreadable selector is ignored", sseEvent{ID: "2", Type: "created",
			Data: []byte(`{"id":"b1","kind":"block","selector":"???","created":1700000000000}`)}, false},
	} {
		err := newTestFeed().apply(tc.ev)
		if got := errors.Is(err, errResync); got != tc.resync {
			t.Errorf("%s: apply = %v, want resync %v", tc.name, err, tc.resync)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 10*time.Second
	for attempt := range 100 {
		d := backoff(lo, hi, attempt)
		ceiling := min(hi, lo<<min(attempt, 30))
		if attempt >= 30 {
			ceiling = hi
		}
		if d < ceiling/2 || d > ceiling {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", attempt, d, ceiling/2, ceiling)
		}
	}
}
