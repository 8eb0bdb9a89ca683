package revocation

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// The kid key: exact values only, anchored like jti, never on a block, and a revoke
// with a kid term ignores iat.

func TestKeyIDSelector(t *testing.T) {
	for in, canonical := range map[string]string{
		"kid=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs": "kid=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		"sub=alice,kid=k1":     "kid=k1,sub=alice",
		`kid="a,b"`:            `kid="a,b"`,
		"kid=k1,sub=spiffe:*":  "kid=k1,sub=spiffe:*",
		"kid=k1,upstream=corp": "kid=k1,upstream=corp",
	} {
		sel, err := ParseSelector(in)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", in, err)
			continue
		}
		if sel.String() != canonical {
			t.Errorf("ParseSelector(%q) = %q, want %q", in, sel, canonical)
		}
		if v, _ := sel.Value(KeyKeyID); v == "" {
			t.Errorf("ParseSelector(%q) has no kid term", in)
		}
	}
	// Exact only: a '*' is refused, not taken for a glob, quoted or not, even with
	// another exact term.
	for _, in := range []string{"kid=*", "kid=k*", "kid=*k", `kid="k*"`, "kid=k*,sub=alice", "kid=", "kid=a\nb", "kid=a,kid=b"} {
		if sel, err := ParseSelector(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSelector(%q) = %q, %v; want ErrInvalid", in, sel, err)
		}
	}
	if _, err := NewSelector(KeyKeyID, "k*"); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewSelector(kid glob) = %v, want ErrInvalid", err)
	}
}

func TestKeyIDAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"kid=k":                       "kid=k",
		"kid=k,sub=s,upstream=u":      "kid=k",
		"jti=j,kid=k":                 "jti=j",
		"kid=k,sub=spiffe://corp/*":   "kid=k",
		"kid=k,attr.team=blue,aud=a":  "kid=k",
		"client_id=c,kid=k,bnd=b":     "kid=k",
		"kid=k,trust_domain=t,aud=a*": "kid=k",
	} {
		if got := MustParseSelector(in).Anchor(); got != want {
			t.Errorf("%q.Anchor() = %q, want %q", in, got, want)
		}
	}
	f := &Facts{JTI: "j", KeyID: "k1", Subject: "spiffe://corp/ns/a", Upstream: "corp"}
	anchors := f.Anchors()
	if !slices.Contains(anchors, "kid=k1") {
		t.Errorf("Anchors() = %q, lacks kid=k1", anchors)
	}
	if n := len(anchors); n != len((&Facts{JTI: "j", Subject: "spiffe://corp/ns/a", Upstream: "corp"}).Anchors())+1 {
		t.Errorf("kid adds %d anchors, want 1: %q", n, anchors)
	}
	for _, a := range (&Facts{JTI: "j", Subject: "s"}).Anchors() {
		if a == "kid=" {
			t.Errorf("facts without a kid have anchor %q", a)
		}
	}
	// Every selector with a kid term that matches f has its anchor among f's.
	for _, in := range []string{"kid=k1", "kid=k1,upstream=corp", "kid=k1,sub=spiffe://corp/*", "jti=j,kid=k1"} {
		sel := MustParseSelector(in)
		if !sel.Match(f) {
			t.Errorf("%q does not match %+v", in, f)
		}
		if !slices.Contains(anchors, sel.Anchor()) {
			t.Errorf("%q: anchor %q not among %q", in, sel.Anchor(), anchors)
		}
	}
	for _, in := range []string{"kid=k2", "kid=k1,upstream=other", "kid=K1"} {
		if MustParseSelector(in).Match(f) {
			t.Errorf("%q matches %+v", in, f)
		}
	}
	if MustParseSelector("kid=k1").Match(&Facts{JTI: "j", Subject: "s"}) {
		t.Error("kid=k1 matches facts without a kid (a workload at issuance)")
	}
}

func TestKeyIDFromClaims(t *testing.T) {
	// kid is a header, not a claim: a token cannot choose its own KeyID fact.
	f := FactsFromClaims(map[string]any{"jti": "j", "sub": "s", "kid": "k1", "iat": 1700000000.0})
	if f.KeyID != "" {
		t.Errorf("FactsFromClaims read KeyID %q from the claims", f.KeyID)
	}
}

func TestCheckKind(t *testing.T) {
	kid := MustParseSelector("kid=k1,upstream=corp")
	if err := kid.CheckKind(KindRevoke); err != nil {
		t.Errorf("revoke by kid: %v", err)
	}
	if err := kid.CheckKind(KindBlock); !errors.Is(err, ErrInvalid) {
		t.Errorf("block by kid: %v, want ErrInvalid", err)
	}
	if err := MustParseSelector("sub=a").CheckKind(KindBlock); err != nil {
		t.Errorf("block by sub: %v", err)
	}
	if err := MustParseSelector("sub=a").CheckKind("ban"); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown kind: %v, want ErrInvalid", err)
	}
}

func TestKeyIDRevokeIgnoresIssuedAt(t *testing.T) {
	created := time.Date(2030, 1, 1, 12, 0, 0, 500e6, time.UTC)
	now := created.Add(time.Minute)
	kid := Entry{ID: "k", Kind: KindRevoke, Selector: "kid=old", Created: created, Expires: created.Add(time.Hour)}
	sub := Entry{ID: "s", Kind: KindRevoke, Selector: "sub=alice", Created: created, Expires: created.Add(time.Hour)}
	tok := func(key string, iat time.Duration) *Facts {
		return &Facts{JTI: "j", Subject: "alice", KeyID: key, IssuedAt: created.Add(iat)}
	}
	for _, tt := range []struct {
		name    string
		e       Entry
		f       *Facts
		now     time.Time
		want    bool
		indexed bool // what an Index holding only e answers (differs for inactive entries it still holds)
	}{
		{"kid, issued before", kid, tok("old", -time.Hour), now, true, true},
		{"kid, issued after", kid, tok("old", time.Hour), now, true, true},
		{"kid, issued far in the future", kid, tok("old", 1000*time.Hour), now, true, true},
		{"kid, no iat", kid, &Facts{Subject: "alice", KeyID: "old"}, now, true, true},
		{"kid, other key", kid, tok("new", -time.Hour), now, false, false},
		{"kid, no key", kid, tok("", -time.Hour), now, false, false},
		{"kid, expired", kid, tok("old", time.Hour), created.Add(time.Hour), false, false},
		{"sub, issued after", sub, tok("old", time.Hour), now, false, false},
		{"sub, issued before", sub, tok("old", -time.Hour), now, true, true},
	} {
		if got := tt.e.Invalidates(tt.f, tt.now); got != tt.want {
			t.Errorf("%s: Invalidates = %v, want %v", tt.name, got, tt.want)
		}
		x := NewIndex()
		if err := x.Put(tt.e); err != nil {
			t.Fatal(err)
		}
		if got := x.Revoked(tt.f, tt.now); (got != nil) != tt.indexed || got != nil && got.ID != tt.e.ID {
			t.Errorf("%s: Index.Revoked = %v, want revoked %v", tt.name, got, tt.indexed)
		}
	}
	// A lifted kid revoke no longer applies.
	x := NewIndex()
	if err := x.Put(kid); err != nil {
		t.Fatal(err)
	}
	if err := x.Apply(Event{Type: EventLifted, Entry: Entry{ID: kid.ID}}); err != nil {
		t.Fatal(err)
	}
	if e := x.Revoked(tok("old", time.Hour), now); e != nil {
		t.Errorf("lifted kid revoke applies: %v", e)
	}
	// A block cannot name a kid, in an Index as in a store.
	if err := x.Put(Entry{ID: "b", Kind: KindBlock, Selector: "kid=old"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Index.Put(block kid) = %v, want ErrInvalid", err)
	}
	// A kid term ANDs with the others: only that key's tokens of that subject.
	both := Entry{ID: "ks", Kind: KindRevoke, Selector: "kid=old,sub=alice", Created: created, Expires: created.Add(time.Hour)}
	if !both.Invalidates(tok("old", time.Hour), now) {
		t.Error("kid=old,sub=alice does not invalidate alice's later token of key old")
	}
	bob := tok("old", time.Hour)
	bob.Subject = "bob"
	if both.Invalidates(bob, now) {
		t.Error("kid=old,sub=alice invalidates bob's token")
	}
}
