// Package revocationtest is the conformance suite every revocation.Store passes:
// entries and selectors, the iat <= Created rule, blocks, bindings, the feed, the
// revoke-versus-issue race, one-time claims and argument checks.
//
// Usage, in a backend's tests:
//
//	func TestConformance(t *testing.T) {
//		revocationtest.Run(t, func(t *testing.T) revocation.Store {
//			s := open(t) // a fresh, empty store, closed when t ends
//			return s
//		})
//	}
package revocationtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/revocation"
)

// Run runs the suite. open returns a fresh, empty store for t (closing it when t
// ends); the store uses the real clock, as a Redis store takes its time from Redis.
func Run(t *testing.T, open func(t *testing.T) revocation.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s revocation.Store)
	}{
		{"CreateListLift", testCreateListLift},
		{"RevokeByEachKey", testRevokeByEachKey},
		{"RevokeByGlob", testRevokeByGlob},
		{"IssuedAtVersusCreated", testIssuedAtVersusCreated},
		{"RevokeByKeyID", testRevokeByKeyID},
		{"Blocks", testBlocks},
		{"Expiry", testExpiry},
		{"Bind", testBind},
		{"Events", testEvents},
		{"SnapshotMatchesEvents", testSnapshot},
		{"Wait", testWait},
		{"RevokeVersusIssueRace", testRevokeRace},
		{"BlockVersusIssueRace", testBlockRace},
		{"Claim", testClaim},
		{"InvalidInput", testInvalid},
		{"Identity", testIdentity},
		{"Close", testClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// maxSkew bounds how far Created may be from the local clock: a store adds a grace
// of a second or two, and Redis's clock is the machine's.
const maxSkew = 5 * time.Second

func create(t *testing.T, s revocation.Store, kind revocation.Kind, sel string) revocation.Entry {
	t.Helper()
	e, err := s.Create(t.Context(), revocation.Entry{Kind: kind, Selector: sel, Reason: "test", Actor: "tester"})
	if err != nil {
		t.Fatalf("Create(%s %q): %v", kind, sel, err)
	}
	return e
}

func revoked(t *testing.T, s revocation.Store, f *revocation.Facts) *revocation.Entry {
	t.Helper()
	e, err := s.Revoked(t.Context(), f)
	if err != nil {
		t.Fatalf("Revoked(%+v): %v", f, err)
	}
	return e
}

func wantRevokedBy(t *testing.T, s revocation.Store, f *revocation.Facts, id string) {
	t.Helper()
	e := revoked(t, s, f)
	switch {
	case id == "" && e != nil:
		t.Errorf("Revoked(%+v) = entry %s %q, want none", f, e.ID, e.Selector)
	case id != "" && e == nil:
		t.Errorf("Revoked(%+v) = none, want entry %s", f, id)
	case id != "" && e.ID != id:
		t.Errorf("Revoked(%+v) = entry %s, want %s", f, e.ID, id)
	}
}

func admit(t *testing.T, s revocation.Store, f *revocation.Facts, instance string) (revocation.Admission, error) {
	t.Helper()
	return s.Admit(t.Context(), f, instance)
}

func wantBlockedBy(t *testing.T, s revocation.Store, f *revocation.Facts, id string) {
	t.Helper()
	_, err := admit(t, s, f, "")
	var be *revocation.BlockedError
	switch {
	case id == "" && err != nil:
		t.Errorf("Admit(%+v) = %v, want admission", f, err)
	case id != "" && !errors.As(err, &be):
		t.Errorf("Admit(%+v) = %v, want *BlockedError for %s", f, err, id)
	case id != "" && (!errors.Is(err, revocation.ErrBlocked) || be.Entry.ID != id || be.Entry.Kind != revocation.KindBlock):
		t.Errorf("Admit(%+v) = %v (entry %+v), want blocked by %s", f, err, be.Entry, id)
	}
}

// workload returns facts for a workload unique to the test, issued long ago.
func workload(name string) *revocation.Facts {
	return &revocation.Facts{
		JTI:         "jti-" + name,
		Subject:     "spiffe://corp.example/ns/prod/sa/" + name,
		Upstream:    "corp",
		TrustDomain: "corp.example",
		ClientID:    "client-" + name,
		Audiences:   []string{"https://api.example/" + name, "other"},
		Attributes:  map[string]string{"team": "team-" + name, "image": "sha256:" + name},
		Binding:     "fp-" + name,
		IssuedAt:    time.Now().Add(-time.Hour),
	}
}

func testCreateListLift(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	before := time.Now()
	e := create(t, s, revocation.KindRevoke, "upstream=corp,sub=alice")
	after := time.Now()
	if e.ID == "" || e.Kind != revocation.KindRevoke || e.Selector != "sub=alice,upstream=corp" ||
		e.Reason != "test" || e.Actor != "tester" || e.Lifted {
		t.Errorf("Create = %+v", e)
	}
	if e.Created.Before(before.Add(-maxSkew)) || e.Created.After(after.Add(maxSkew)) {
		t.Errorf("Created %v not near [%v, %v]", e.Created, before, after)
	}
	if !e.Expires.After(e.Created) {
		t.Errorf("revoke without Expires got Expires %v, not after Created %v", e.Expires, e.Created)
	}
	b := create(t, s, revocation.KindBlock, "sub=bob")
	if !b.Expires.IsZero() {
		t.Errorf("block without Expires got Expires %v, want open-ended", b.Expires)
	}
	until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	c, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=carol", Reason: "r", Actor: "a", Expires: until})
	if err != nil || !c.Expires.Equal(until) {
		t.Fatalf("Create with Expires = %+v, %v; want Expires %v", c, err, until)
	}
	if e.ID == b.ID || b.ID == c.ID {
		t.Errorf("IDs repeat: %s %s %s", e.ID, b.ID, c.ID)
	}

	list, err := s.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(list); !sameIDs(got, []string{e.ID, b.ID, c.ID}) {
		t.Errorf("List = %v, want %v", got, []string{e.ID, b.ID, c.ID})
	}
	for _, l := range list {
		if l.ID == e.ID && !sameEntry(l, e) {
			t.Errorf("listed %+v, created %+v", l, e)
		}
	}

	lifted, err := s.Lift(ctx, b.ID, "admin", "false alarm")
	if err != nil {
		t.Fatalf("Lift: %v", err)
	}
	if !lifted.Lifted || lifted.ID != b.ID || lifted.Selector != b.Selector {
		t.Errorf("Lift = %+v", lifted)
	}
	if again, err := s.Lift(ctx, b.ID, "admin", "twice"); err != nil || !again.Lifted {
		t.Errorf("second Lift = %+v, %v; want the lifted entry", again, err)
	}
	if _, err := s.Lift(ctx, "nosuchentry", "admin", "r"); !errors.Is(err, revocation.ErrNotFound) {
		t.Errorf("Lift(unknown) = %v, want ErrNotFound", err)
	}
	list, _ = s.List(ctx, false)
	if got := ids(list); !sameIDs(got, []string{e.ID, c.ID}) {
		t.Errorf("List after Lift = %v", got)
	}
	all, err := s.List(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all); !sameIDs(got, []string{e.ID, b.ID, c.ID}) {
		t.Errorf("List(inactive) = %v", got)
	}
	for _, l := range all {
		if l.ID == b.ID && !l.Lifted {
			t.Errorf("List(inactive) shows %s not lifted", b.ID)
		}
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func ids(es []revocation.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func sameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func sameEntry(a, b revocation.Entry) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.Selector == b.Selector && a.Reason == b.Reason &&
		a.Actor == b.Actor && a.Created.Equal(b.Created) && a.Expires.Equal(b.Expires) && a.Lifted == b.Lifted
}

func testRevokeByEachKey(t *testing.T, s revocation.Store) {
	w := workload("w1")
	other := workload("w2")
	cases := map[string]string{
		"sub":          "sub=" + w.Subject,
		"jti":          "jti=" + w.JTI,
		"client_id":    "client_id=" + w.ClientID,
		"aud":          "aud=" + w.Audiences[0],
		"attr":         "attr.team=" + w.Attributes["team"],
		"bnd":          "bnd=" + w.Binding,
		"upstream":     "upstream=corp,attr.image=" + w.Attributes["image"],
		"trust_domain": "trust_domain=corp.example,client_id=" + w.ClientID,
		"several":      "upstream=corp,sub=" + w.Subject + ",aud=other,attr.team=team-w1",
	}
	for name, sel := range cases {
		t.Run(name, func(t *testing.T) {
			e := create(t, s, revocation.KindRevoke, sel)
			wantRevokedBy(t, s, w, e.ID)
			wantRevokedBy(t, s, other, "")
			if _, err := s.Lift(t.Context(), e.ID, "admin", "next case"); err != nil {
				t.Fatal(err)
			}
			wantRevokedBy(t, s, w, "")
		})
	}
	// upstream alone revokes every token of the upstream, and no other.
	e := create(t, s, revocation.KindRevoke, "upstream=corp")
	wantRevokedBy(t, s, w, e.ID)
	wantRevokedBy(t, s, other, e.ID)
	elsewhere := workload("w3")
	elsewhere.Upstream = "partner"
	wantRevokedBy(t, s, elsewhere, "")
}

func testRevokeByGlob(t *testing.T, s revocation.Store) {
	prod := create(t, s, revocation.KindRevoke, "sub=spiffe://corp.example/ns/prod/*")
	team := create(t, s, revocation.KindRevoke, "upstream=corp,attr.team=blue*")
	w := workload("a")
	wantRevokedBy(t, s, w, prod.ID)
	dev := workload("b")
	dev.Subject = "spiffe://corp.example/ns/dev/sa/b"
	wantRevokedBy(t, s, dev, "")
	dev.Attributes["team"] = "blue-2"
	wantRevokedBy(t, s, dev, team.ID)
	dev.Upstream = "partner"
	wantRevokedBy(t, s, dev, "")
}

func testIssuedAtVersusCreated(t *testing.T, s revocation.Store) {
	w := workload("iat")
	adm, err := admit(t, s, w, "")
	if err != nil {
		t.Fatal(err)
	}
	if adm.IssuedAt.Nanosecond() != 0 || adm.IssuedAt.After(time.Now()) {
		t.Errorf("IssuedAt %v: want whole seconds, not in the future", adm.IssuedAt)
	}
	e := create(t, s, revocation.KindRevoke, "sub="+w.Subject)
	if adm.IssuedAt.After(e.Created) {
		t.Errorf("IssuedAt %v of an earlier Admit is after Created %v", adm.IssuedAt, e.Created)
	}
	at := func(iat time.Time) *revocation.Facts {
		f := *w
		f.IssuedAt = iat
		return &f
	}
	sec := e.Created.Truncate(time.Second)
	wantRevokedBy(t, s, at(adm.IssuedAt), e.ID)
	wantRevokedBy(t, s, at(e.Created.Add(-time.Hour)), e.ID)
	wantRevokedBy(t, s, at(sec), e.ID)                           // same second, iat before Created
	wantRevokedBy(t, s, at(sec.Add(999*time.Millisecond)), e.ID) // same second, even if after Created
	wantRevokedBy(t, s, at(sec.Add(time.Second)), "")            // next second: issued after
	wantRevokedBy(t, s, at(sec.Add(time.Hour)), "")              // long after
	wantRevokedBy(t, s, at(time.Time{}), e.ID)                   // no iat: fails closed
	if got := revoked(t, s, at(e.Created)); got == nil || !sameEntry(*got, e) {
		t.Errorf("Revoked returned %+v, want the created entry %+v", got, e)
	}
}

func testBlocks(t *testing.T, s revocation.Store) {
	w := workload("blk")
	wantBlockedBy(t, s, w, "")
	b := create(t, s, revocation.KindBlock, "upstream=corp,attr.team="+w.Attributes["team"])
	wantBlockedBy(t, s, w, b.ID)
	wantBlockedBy(t, s, workload("free"), "")
	// A block does not revoke, and a revoke does not block.
	wantRevokedBy(t, s, w, "")
	r := create(t, s, revocation.KindRevoke, "sub="+workload("rev").Subject)
	wantBlockedBy(t, s, workload("rev"), "")
	_ = r
	if _, err := s.Lift(t.Context(), b.ID, "admin", "done"); err != nil {
		t.Fatal(err)
	}
	wantBlockedBy(t, s, w, "")
	// An open-ended block and a glob block.
	g := create(t, s, revocation.KindBlock, "sub=spiffe://corp.example/ns/prod/sa/bl*")
	wantBlockedBy(t, s, w, g.ID)
}

func testExpiry(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	w := workload("exp")
	until := time.Now().Add(400 * time.Millisecond)
	r, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "jti=" + w.JTI, Reason: "r", Actor: "a", Expires: until})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "jti=" + w.JTI, Reason: "r", Actor: "a", Expires: until})
	if err != nil {
		t.Fatal(err)
	}
	wantRevokedBy(t, s, w, r.ID)
	wantBlockedBy(t, s, w, b.ID)
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	wantRevokedBy(t, s, w, "")
	wantBlockedBy(t, s, w, "")
	list, err := s.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("List after expiry = %v", ids(list))
	}
}

func testBind(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	const instance = "corp/spiffe://corp.example/ns/prod/sa/bind"
	w := workload("bind")
	w.Binding = "fp-old"
	if adm, err := admit(t, s, w, instance); err != nil || adm.Binding != "" {
		t.Fatalf("Admit before Bind = %+v, %v; want no binding", adm, err)
	}
	if e, err := s.Bind(ctx, instance, w, time.Hour); err != nil || e != nil {
		t.Fatalf("first Bind = %v, %v; want nothing fired", e, err)
	}
	if adm, err := admit(t, s, w, instance); err != nil || adm.Binding != "fp-old" {
		t.Fatalf("Admit after Bind = %+v, %v; want fp-old", adm, err)
	}
	if e, err := s.Bind(ctx, instance, w, time.Hour); err != nil || e != nil {
		t.Fatalf("Bind with the same fingerprint = %v, %v; want nothing fired", e, err)
	}
	oldToken := *w
	oldToken.IssuedAt = time.Now().Add(-time.Minute)

	changed := *w
	changed.Binding = "fp-new"
	fired, err := s.Bind(ctx, instance, &changed, time.Hour)
	if err != nil || fired == nil {
		t.Fatalf("Bind with a new fingerprint = %v, %v; want a fired entry", fired, err)
	}
	wantSel := "bnd=fp-old,sub=" + w.Subject + ",upstream=corp"
	if fired.Kind != revocation.KindRevoke || fired.Selector != wantSel || fired.Actor != revocation.ActorRuntimeChange ||
		fired.ID == "" || fired.Reason == "" || !fired.Expires.After(fired.Created) {
		t.Errorf("fired = %+v, want a revoke of %q by %s", fired, wantSel, revocation.ActorRuntimeChange)
	}
	wantRevokedBy(t, s, &oldToken, fired.ID)
	newToken := changed
	newToken.IssuedAt = time.Now().Add(-time.Minute) // even if issued before: other bnd
	wantRevokedBy(t, s, &newToken, "")
	other := workload("bind2")
	other.Binding = "fp-old"
	wantRevokedBy(t, s, other, "")

	if e, err := s.Bind(ctx, instance, &changed, time.Hour); err != nil || e != nil {
		t.Errorf("Bind again with the new fingerprint = %v, %v; want nothing fired", e, err)
	}
	if adm, err := admit(t, s, w, instance); err != nil || adm.Binding != "fp-new" {
		t.Errorf("Admit after the change = %+v, %v; want fp-new", adm, err)
	}
	list, _ := s.List(ctx, false)
	if got := ids(list); !sameIDs(got, []string{fired.ID}) {
		t.Errorf("List = %v, want the fired entry only", got)
	}
	// Instances are independent.
	if adm, err := admit(t, s, w, instance+"-2"); err != nil || adm.Binding != "" {
		t.Errorf("Admit of another instance = %+v, %v", adm, err)
	}
}

func testEvents(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	_, c0, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if evs, c, err := s.Events(ctx, c0, 10); err != nil || len(evs) != 0 || c != c0 {
		t.Fatalf("Events(%q) on an empty feed = %v, %q, %v", c0, evs, c, err)
	}
	a := create(t, s, revocation.KindRevoke, "sub=a")
	b := create(t, s, revocation.KindBlock, "sub=b")
	lifted, err := s.Lift(ctx, a.ID, "admin", "r")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ string
		e   revocation.Entry
	}{{revocation.EventCreated, a}, {revocation.EventCreated, b}, {revocation.EventLifted, lifted}}
	check := func(evs []revocation.Event, from int) {
		t.Helper()
		for i, ev := range evs {
			w := want[from+i]
			if ev.Type != w.typ || !sameEntry(ev.Entry, w.e) || ev.Cursor == "" {
				t.Errorf("event %d = %s %+v (cursor %q), want %s %+v", from+i, ev.Type, ev.Entry, ev.Cursor, w.typ, w.e)
			}
		}
	}
	all, last, err := s.Events(ctx, c0, 10)
	if err != nil || len(all) != 3 {
		t.Fatalf("Events(%q) = %d events, %v; want 3", c0, len(all), err)
	}
	check(all, 0)
	if last != all[2].Cursor {
		t.Errorf("Events cursor %q, want the last event's %q", last, all[2].Cursor)
	}
	// Resumable in pages.
	var paged []revocation.Event
	for c := c0; len(paged) < 3; {
		evs, next, err := s.Events(ctx, c, 1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Events(%q, 1) = %v, %v", c, evs, err)
		}
		paged = append(paged, evs...)
		c = next
	}
	check(paged, 0)
	if evs, c, err := s.Events(ctx, last, 10); err != nil || len(evs) != 0 || c != last {
		t.Errorf("Events(last) = %v, %q, %v; want none", evs, c, err)
	}
	// "" starts at the oldest retained event.
	if evs, c, err := s.Events(ctx, "", 10); err != nil || len(evs) != 3 || c != last {
		t.Errorf(`Events("") = %d events, %q, %v`, len(evs), c, err)
	} else {
		check(evs, 0)
	}
	for _, bogus := range []string{"1", "1-0", "0", "garbage", "99999999999999999999-0", strings.Repeat("9", 40)} {
		if _, _, err := s.Events(ctx, bogus, 10); !errors.Is(err, revocation.ErrCursorExpired) {
			t.Errorf("Events(%q) = %v, want ErrCursorExpired", bogus, err)
		}
	}
}

func testSnapshot(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	var made []revocation.Entry
	for i := range 5 {
		made = append(made, create(t, s, revocation.KindRevoke, fmt.Sprintf("sub=s%d", i)))
	}
	if _, err := s.Lift(ctx, made[1].ID, "admin", "r"); err != nil {
		t.Fatal(err)
	}
	entries, cursor, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := s.List(ctx, false)
	if !sameIDs(ids(entries), ids(list)) || len(entries) != 4 {
		t.Errorf("Snapshot = %v, List = %v", ids(entries), ids(list))
	}
	// Replaying the whole feed gives the snapshot, and nothing follows its cursor.
	evs, last, err := s.Events(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	x := revocation.NewIndex()
	for _, ev := range evs {
		if err := x.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(x.Entries(time.Now())); !sameIDs(got, ids(entries)) {
		t.Errorf("replayed feed = %v, snapshot = %v", got, ids(entries))
	}
	if last != cursor {
		t.Errorf("snapshot cursor %q, feed's last %q", cursor, last)
	}
	// After the snapshot, its cursor gives exactly the later changes.
	c := create(t, s, revocation.KindBlock, "sub=later")
	evs, _, err = s.Events(ctx, cursor, 100)
	if err != nil || len(evs) != 1 || evs[0].Entry.ID != c.ID {
		t.Errorf("Events(snapshot cursor) = %v, %v; want the one created after", evs, err)
	}
}

func testWait(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	_, cursor, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing new: Wait blocks until ctx ends (or returns spuriously).
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_ = s.Wait(short, cursor)
	cancel()

	got := make(chan []revocation.Event, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			wctx, cancel := context.WithDeadline(ctx, deadline)
			err := s.Wait(wctx, cursor)
			cancel()
			if err != nil && ctx.Err() == nil && wctx.Err() == nil {
				t.Errorf("Wait: %v", err)
				break
			}
			evs, _, err := s.Events(ctx, cursor, 10)
			if err != nil {
				t.Errorf("Events: %v", err)
				break
			}
			if len(evs) > 0 {
				got <- evs
				return
			}
		}
		got <- nil
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	e := create(t, s, revocation.KindRevoke, "sub=waited")
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].Entry.ID != e.ID {
			t.Fatalf("after Wait: events %v, want the created entry", evs)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Wait woke up %v after the event", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait never woke up")
	}
	// A cursor with events after it returns at once.
	start = time.Now()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Wait(wctx, cursor); err != nil || time.Since(start) > time.Second {
		t.Errorf("Wait with a pending event = %v after %v", err, time.Since(start))
	}
	// A cancelled context ends Wait.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	_, now, _ := s.Snapshot(ctx)
	if err := s.Wait(cctx, now); err == nil {
		t.Error("Wait with a cancelled context returned nil")
	}
}

// testRevokeRace runs Admit in many goroutines for one workload while a revoke for
// it is created: every token whose Admit returned before Create returned must be
// revoked afterwards.
func testRevokeRace(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	for round := range 3 {
		w := workload(fmt.Sprintf("race%d", round))
		type token struct {
			iat    time.Time
			before bool // Admit returned before Create returned
		}
		var (
			createDone atomic.Bool
			stop       atomic.Bool
			mu         sync.Mutex
			tokens     []token
			wg         sync.WaitGroup
		)
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					adm, err := s.Admit(ctx, w, "")
					before := !createDone.Load() // read after Admit returned
					if err != nil {
						t.Errorf("Admit: %v", err)
						return
					}
					mu.Lock()
					tokens = append(tokens, token{adm.IssuedAt, before})
					mu.Unlock()
				}
			})
		}
		time.Sleep(time.Duration(100+round*150) * time.Millisecond)
		e, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=" + w.Subject, Reason: "race", Actor: "tester"})
		createDone.Store(true)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("Create: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		var nBefore, nAfter int
		checked := map[token]bool{} // one check per distinct (iat, before)
		for _, tok := range tokens {
			if tok.before {
				nBefore++
			} else {
				nAfter++
			}
			if checked[tok] {
				continue
			}
			checked[tok] = true
			f := *w
			f.IssuedAt = tok.iat
			got := revoked(t, s, &f)
			if tok.before && (got == nil || got.ID != e.ID) {
				t.Errorf("round %d: token with iat %v admitted before Create returned (Created %v) is not revoked", round, tok.iat, e.Created)
			}
			// Whatever the timing, revocation follows iat <= Created exactly.
			if want := tok.iat.Unix() <= e.Created.Truncate(time.Second).Unix(); (got != nil) != want {
				t.Errorf("round %d: iat %v, Created %v: revoked=%v", round, tok.iat, e.Created, got != nil)
			}
		}
		if nBefore == 0 {
			t.Errorf("round %d: no Admit completed before Create; the race was not exercised", round)
		}
		t.Logf("round %d: %d tokens admitted before Create returned, %d after", round, nBefore, nAfter)
	}
}

// testBlockRace: once Create of a block returns, no Admit that starts afterwards
// succeeds.
func testBlockRace(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	w := workload("blockrace")
	var (
		createDone atomic.Bool
		stop       atomic.Bool
		escaped    atomic.Int64
		blocked    atomic.Int64
		wg         sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				after := createDone.Load() // read before Admit starts
				_, err := s.Admit(ctx, w, "")
				switch {
				case errors.Is(err, revocation.ErrBlocked):
					blocked.Add(1)
				case err != nil:
					t.Errorf("Admit: %v", err)
					return
				case after:
					escaped.Add(1)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	_, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindBlock, Selector: "sub=" + w.Subject, Reason: "race", Actor: "tester"})
	createDone.Store(true)
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if escaped.Load() != 0 {
		t.Errorf("%d tokens admitted after the block was created", escaped.Load())
	}
	if blocked.Load() == 0 {
		t.Error("no Admit was blocked")
	}
}

func testInvalid(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	ok := revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=a", Reason: "r", Actor: "a"}
	bad := map[string]func(e *revocation.Entry){
		"bad selector":   func(e *revocation.Entry) { e.Selector = "sub=" },
		"glob only":      func(e *revocation.Entry) { e.Selector = "sub=*" },
		"unknown key":    func(e *revocation.Entry) { e.Selector = "foo=bar" },
		"unresolved iss": func(e *revocation.Entry) { e.Selector = "iss=https://idp" },
		"kind":           func(e *revocation.Entry) { e.Kind = "ban" },
		"no kind":        func(e *revocation.Entry) { e.Kind = "" },
		"empty reason":   func(e *revocation.Entry) { e.Reason = "" },
		"long reason":    func(e *revocation.Entry) { e.Reason = strings.Repeat("r", revocation.MaxReasonLen+1) },
		"control reason": func(e *revocation.Entry) { e.Reason = "a\nb" },
		"empty actor":    func(e *revocation.Entry) { e.Actor = "" },
		"long actor":     func(e *revocation.Entry) { e.Actor = strings.Repeat("a", revocation.MaxActorLen+1) },
		"past expiry":    func(e *revocation.Entry) { e.Expires = time.Now().Add(-time.Second) },
	}
	for name, mutate := range bad {
		e := ok
		mutate(&e)
		if got, err := s.Create(ctx, e); !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("Create(%s) = %+v, %v; want ErrInvalid", name, got, err)
		}
	}
	if list, err := s.List(ctx, true); err != nil || len(list) != 0 {
		t.Errorf("refused entries were stored: %v, %v", list, err)
	}
	e := create(t, s, revocation.KindRevoke, "sub=a")
	for name, args := range map[string][3]string{
		"empty id":     {"", "a", "r"},
		"bad id":       {"a/b", "a", "r"},
		"long id":      {strings.Repeat("a", revocation.MaxIDLen+1), "a", "r"},
		"empty actor":  {e.ID, "", "r"},
		"empty reason": {e.ID, "a", ""},
	} {
		if _, err := s.Lift(ctx, args[0], args[1], args[2]); !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("Lift(%s) = %v, want ErrInvalid", name, err)
		}
	}
	w := workload("inv")
	noBinding := *w
	noBinding.Binding = ""
	noSubject := *w
	noSubject.Subject = ""
	for name, call := range map[string]func() error{
		"Admit nil":          func() error { _, err := s.Admit(ctx, nil, ""); return err },
		"Admit long inst":    func() error { _, err := s.Admit(ctx, w, strings.Repeat("i", revocation.MaxInstanceLen+1)); return err },
		"Revoked nil":        func() error { _, err := s.Revoked(ctx, nil); return err },
		"Bind nil":           func() error { _, err := s.Bind(ctx, "i", nil, time.Hour); return err },
		"Bind no binding":    func() error { _, err := s.Bind(ctx, "i", &noBinding, time.Hour); return err },
		"Bind no subject":    func() error { _, err := s.Bind(ctx, "i", &noSubject, time.Hour); return err },
		"Bind no instance":   func() error { _, err := s.Bind(ctx, "", w, time.Hour); return err },
		"Bind zero ttl":      func() error { _, err := s.Bind(ctx, "i", w, 0); return err },
		"Revoked many attrs": func() error { _, err := s.Revoked(ctx, manyAttrs()); return err },
	} {
		if err := call(); !errors.Is(err, revocation.ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", name, err)
		}
	}
	// Still usable after refusals.
	wantRevokedBy(t, s, &revocation.Facts{Subject: "a", IssuedAt: time.Now().Add(-time.Hour)}, e.ID)
}

func manyAttrs() *revocation.Facts {
	f := &revocation.Facts{Subject: "x", Attributes: map[string]string{}}
	for i := range 300 {
		f.Attributes[fmt.Sprintf("a%d", i)] = "v"
	}
	return f
}

func testClose(t *testing.T, s revocation.Store) {
	ctx := t.Context()
	create(t, s, revocation.KindBlock, "sub=closed")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	w := &revocation.Facts{Subject: "closed"}
	if _, err := s.Admit(ctx, w, ""); err == nil || errors.Is(err, revocation.ErrBlocked) {
		t.Errorf("Admit after Close = %v, want a store error", err)
	}
	if e, err := s.Revoked(ctx, w); err == nil {
		t.Errorf("Revoked after Close = %v, nil; want an error", e)
	}
	if _, err := s.Create(ctx, revocation.Entry{Kind: revocation.KindRevoke, Selector: "sub=a", Reason: "r", Actor: "a"}); err == nil {
		t.Error("Create after Close succeeded")
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
