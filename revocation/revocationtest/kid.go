package revocationtest

import (
	"errors"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// testRevokeByKeyID: a revoke with a kid term invalidates every token signed by
// that key whatever its iat (issued long before, after the entry's Created, or
// without one), and no token of another key or without a kid; it ANDs with the
// other terms, does not block issuance, travels the feed in canonical form and
// stops applying once lifted. A block with a kid term, or a kid glob, is refused.
func testRevokeByKeyID(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	const oldKey, newKey = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "Xk3fv4Jp1QyqzC7pOQp3Yq0Y3nq2m4PjX0b6Uj1r0Ko"
	_, c0, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := create(t, s, revocation.KindRevoke, "kid="+oldKey)
	if e.Selector != "kid="+oldKey {
		t.Errorf("Create: selector %q, want kid=%s", e.Selector, oldKey)
	}
	token := func(name, kid string, iat time.Time) *revocation.Facts {
		f := workload(name)
		f.KeyID, f.IssuedAt = kid, iat
		return f
	}
	sec := e.Created.Truncate(time.Second)
	for name, iat := range map[string]time.Time{
		"issued long before":     e.Created.Add(-time.Hour),
		"issued the same second": sec.Add(999 * time.Millisecond),
		"issued the next second": sec.Add(time.Second),
		"issued long after":      e.Created.Add(time.Hour),
		"issued in the future":   time.Now().Add(24 * time.Hour),
		"without iat":            {},
	} {
		t.Run(name, func(t *testing.T) {
			wantRevokedBy(t, s, token("a", oldKey, iat), e.ID)
			wantRevokedBy(t, s, token("b", oldKey, iat), e.ID) // every workload's token
			wantRevokedBy(t, s, token("a", newKey, iat), "")   // another key
			wantRevokedBy(t, s, token("a", "", iat), "")       // no kid (facts of a workload)
		})
	}
	if got := revoked(t, s, token("a", oldKey, e.Created.Add(time.Hour))); got == nil || !sameEntry(*got, e) {
		t.Errorf("Revoked returned %+v, want the created entry %+v", got, e)
	}
	// The kid is exact: no prefix or case folding.
	wantRevokedBy(t, s, token("a", oldKey[:10], e.Created), "")
	wantRevokedBy(t, s, token("a", oldKey+"x", e.Created), "")

	// A revoke by kid does not block issuance (a workload asking for a token has
	// no kid).
	wantBlockedBy(t, s, token("a", "", time.Time{}), "")
	wantBlockedBy(t, s, token("a", oldKey, time.Time{}), "")

	// With another term: only the tokens of that key that also match it, still
	// whatever their iat.
	both := create(t, s, revocation.KindRevoke, "upstream=corp,kid="+newKey)
	wantRevokedBy(t, s, token("c", newKey, both.Created.Add(time.Hour)), both.ID)
	partner := token("c", newKey, both.Created.Add(-time.Hour))
	partner.Upstream = "partner"
	wantRevokedBy(t, s, partner, "")

	// The feed carries the entry as created.
	evs, _, err := s.Events(ctx, c0, 10)
	if err != nil || len(evs) != 2 || evs[0].Type != revocation.EventCreated || !sameEntry(evs[0].Entry, e) {
		t.Errorf("Events = %+v, %v; want the kid revoke first", evs, err)
	}

	// Lifted, it no longer applies.
	if _, err := s.Lift(ctx, e.ID, "admin", "key restored"); err != nil {
		t.Fatal(err)
	}
	wantRevokedBy(t, s, token("a", oldKey, e.Created.Add(-time.Hour)), "")
	wantRevokedBy(t, s, token("a", oldKey, e.Created.Add(time.Hour)), "")

	// Refused: a block by kid (kid applies to issued tokens, not to workloads),
	// alone or with other terms, and a kid glob.
	before, err := s.List(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []revocation.Entry{
		{Kind: revocation.KindBlock, Selector: "kid=" + oldKey, Reason: "r", Actor: "a"},
		{Kind: revocation.KindBlock, Selector: "sub=alice,kid=" + oldKey, Reason: "r", Actor: "a", Expires: time.Now().Add(time.Hour)},
		{Kind: revocation.KindRevoke, Selector: "kid=" + oldKey[:8] + "*", Reason: "r", Actor: "a"},
		{Kind: revocation.KindRevoke, Selector: "kid=*,upstream=corp", Reason: "r", Actor: "a"},
	} {
		if got, err := s.Create(ctx, bad); !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("Create(%s %q) = %+v, %v; want ErrInvalid", bad.Kind, bad.Selector, got, err)
		}
	}
	if after, err := s.List(ctx, true); err != nil || !sameIDs(ids(after), ids(before)) {
		t.Errorf("refused entries were stored: %v, %v", after, err)
	}
}
