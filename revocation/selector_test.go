package revocation

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in        string
		canonical string // "" when in must be refused
	}{
		{"sub=alice", "sub=alice"},
		{"upstream=corp,sub=alice", "sub=alice,upstream=corp"},
		{"sub=alice,upstream=corp", "sub=alice,upstream=corp"},
		{`sub="a,b"`, `sub="a,b"`},
		{`sub="plain"`, `sub=plain`},
		{`sub=a"b`, `sub=a"b`},
		{`sub="\"x"`, `sub="\"x"`},
		{`sub="a\\b,c"`, `sub="a\\b,c"`},
		{`sub=a\b`, `sub=a\b`},
		{"sub=a=b", "sub=a=b"},
		{"attr.team=blue,aud=api", "attr.team=blue,aud=api"},
		{"sub=spiffe://corp/ns/*", "sub=spiffe://corp/ns/*"},
		{"sub=*,upstream=corp", "sub=*,upstream=corp"},
		{"iss=https://idp.example", "iss=https://idp.example"},
		{"jti=x,sub=y,client_id=c,bnd=f,trust_domain=td,aud=a,upstream=u,attr.x_1=v", "attr.x_1=v,aud=a,bnd=f,client_id=c,jti=x,sub=y,trust_domain=td,upstream=u"},
		{"sub= x", "sub= x"},
		{"sub=é", "sub=é"},

		{"", ""},
		{"sub", ""},
		{"sub=", ""},
		{`sub=""`, ""},
		{"sub=a,", ""},
		{",sub=a", ""},
		{"sub=a,sub=b", ""},
		{"nope=a", ""},
		{"Sub=a", ""},
		{" sub=a", ""},
		{"attr.=a", ""},
		{"attr.Team=a", ""},
		{"attr." + strings.Repeat("a", 65) + "=x", ""},
		{"sub=*", ""},
		{"sub=spiffe*", ""},
		{"client_id=ci-*", ""},
		{"sub=*,aud=x*", ""},
		{"iss=https://*", ""},
		{`sub="a`, ""},
		{`sub="a"b`, ""},
		{`sub="a\n"`, ""},
		{"sub=a\tb", ""},
		{"sub=a\x7f", ""},
		{`sub="a` + "\x01" + `"`, ""},
		{"sub=\xff", ""},
		{"sub=" + strings.Repeat("a", MaxValueLen+1), ""},
	}
	for _, tt := range tests {
		sel, err := ParseSelector(tt.in)
		if tt.canonical == "" {
			if err == nil {
				t.Errorf("ParseSelector(%q) = %q, want an error", tt.in, sel)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseSelector(%q): %v does not wrap ErrInvalid", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.canonical {
			t.Errorf("ParseSelector(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
		again, err := ParseSelector(sel.String())
		if err != nil || !again.Equal(sel) {
			t.Errorf("round trip of %q: %v, %v", tt.in, again, err)
		}
	}
}

func TestSelectorMatch(t *testing.T) {
	alice := func() *Facts {
		return &Facts{
			JTI: "j1", Subject: "spiffe://corp/ns/prod/sa/alice", Upstream: "corp", TrustDomain: "corp",
			ClientID: "ci", Audiences: []string{"api", "https://other"}, Attributes: map[string]string{"team": "blue", "empty": ""},
			Binding: "fp1",
		}
	}
	tests := []struct {
		sel   string
		facts func() *Facts
		want  bool
	}{
		{"sub=spiffe://corp/ns/prod/sa/alice", alice, true},
		{"sub=spiffe://corp/ns/prod/sa/bob", alice, false},
		{"sub=spiffe://corp/ns/prod/*", alice, true},
		{"sub=spiffe://corp/ns/dev/*", alice, false},
		{"sub=spiffe://corp/*/alice", alice, true},
		{"sub=*alice,upstream=corp", alice, true},
		{"sub=*bob,upstream=corp", alice, false},
		{"upstream=corp", alice, true},
		{"upstream=corp2", alice, false},
		{"upstream=corp,sub=*", alice, true},
		{"aud=api", alice, true},
		{"aud=https://other", alice, true},
		{"aud=nope", alice, false},
		{"aud=https://*,upstream=corp", alice, true},
		{"attr.team=blue", alice, true},
		{"attr.team=red", alice, false},
		{"attr.team=*,upstream=corp", alice, true},
		{"attr.missing=*,upstream=corp", alice, false},
		{"attr.empty=*,upstream=corp", alice, false},
		{"jti=j1", alice, true},
		{"jti=j2", alice, false},
		{"bnd=fp1,upstream=corp", alice, true},
		{"bnd=fp0,upstream=corp", alice, false},
		{"client_id=ci", alice, true},
		{"trust_domain=corp", alice, true},
		{"iss=https://idp", alice, false},
		{"upstream=corp,jti=j1,aud=api", alice, true},
		{"upstream=corp,jti=j1,aud=web", alice, false},
		{"bnd=fp1", func() *Facts { return &Facts{} }, false},
		{"upstream=corp", func() *Facts { return nil }, false},
	}
	for _, tt := range tests {
		sel := MustParseSelector(tt.sel)
		f := tt.facts()
		if got := sel.Match(f); got != tt.want {
			t.Errorf("%q.Match = %v, want %v", tt.sel, got, tt.want)
		}
		// Whenever a selector matches, its anchor is among the facts' anchors: the
		// index never misses an entry.
		if tt.want && !slices.Contains(f.Anchors(), sel.Anchor()) {
			t.Errorf("%q matches but its anchor %q is not in %q", tt.sel, sel.Anchor(), f.Anchors())
		}
	}
	if (Selector{}).Match(alice()) {
		t.Error("zero Selector matches")
	}
}

func TestSelectorAnchor(t *testing.T) {
	tests := map[string]string{
		"jti=j,sub=s,upstream=u":                "jti=j",
		"sub=s,upstream=u":                      "sub=s",
		"client_id=c,bnd=b":                     "client_id=c",
		"bnd=b,attr.x=y":                        "bnd=b",
		"attr.x=y,aud=a":                        "attr.x=y",
		"aud=a,upstream=u":                      "aud=a",
		"upstream=u,trust_domain=t":             "upstream=u",
		"trust_domain=t":                        "trust_domain=t",
		"sub=s*,upstream=u":                     "upstream=u",
		"sub=spiffe://corp/ns/a*":               "sub^spiffe://corp/ns/",
		"sub=spiffe://corp/*":                   "sub^spiffe://corp/",
		"sub=spiffe:*":                          "sub^spiffe:",
		"iss=x":                                 "",
		"iss=x,sub=spiffe://corp/*":             "sub^spiffe://corp/",
		"sub=" + strings.Repeat("a/", 20) + "*": "sub^" + strings.Repeat("a/", MaxSubPrefixes),
	}
	for in, want := range tests {
		if got := MustParseSelector(in).Anchor(); got != want {
			t.Errorf("%q.Anchor() = %q, want %q", in, got, want)
		}
	}
	long := &Facts{Subject: strings.Repeat("a/", 20) + "x"}
	if !slices.Contains(long.Anchors(), "sub^"+strings.Repeat("a/", MaxSubPrefixes)) {
		t.Errorf("anchors of a deep subject lack the deepest bounded prefix: %q", long.Anchors())
	}
}

func TestWithUpstream(t *testing.T) {
	sel := MustParseSelector("iss=https://idp,sub=alice")
	got, err := sel.WithUpstream("corp")
	if err != nil || got.String() != "sub=alice,upstream=corp" {
		t.Fatalf("WithUpstream = %q, %v", got, err)
	}
	if _, err := MustParseSelector("sub=alice").WithUpstream("corp"); !errors.Is(err, ErrInvalid) {
		t.Errorf("WithUpstream without iss: %v", err)
	}
	if _, err := MustParseSelector("iss=x,upstream=other").WithUpstream("corp"); !errors.Is(err, ErrInvalid) {
		t.Errorf("WithUpstream with another upstream: %v", err)
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"sub=alice", `sub="a,b",upstream=corp`, `sub="\"\\"`, "attr.team=blue,aud=*", "sub=spiffe://x/*",
		"iss=a,jti=b", `sub=a"b,bnd="",x`, "sub=*", "sub=a,,b",
		"kid=NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "kid=k,sub=a*", "kid=a*", `kid="a,b",upstream=u`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		canon := sel.String()
		again, err := ParseSelector(canon)
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", canon, s, err)
		}
		if !again.Equal(sel) || again.String() != canon {
			t.Fatalf("round trip of %q: %q != %q", s, again, canon)
		}
		if a := sel.Anchor(); a == "" {
			if _, ok := sel.Value(KeyIssuer); !ok {
				t.Fatalf("%q parses but has no anchor", s)
			}
		}
		// Matching a selector against facts made of its own literal values never
		// panics, and an all-exact selector matches them.
		f := &Facts{Attributes: map[string]string{}}
		exact := true
		for _, tm := range sel.terms {
			exact = exact && tm.exact()
			switch {
			case tm.key == KeyAudience:
				f.Audiences = append(f.Audiences, tm.value)
			case strings.HasPrefix(tm.key, KeyAttrPrefix):
				f.Attributes[strings.TrimPrefix(tm.key, KeyAttrPrefix)] = tm.value
			default:
				setFact(f, tm.key, tm.value)
			}
		}
		_, hasIss := sel.Value(KeyIssuer)
		if exact && !hasIss && !sel.Match(f) {
			t.Fatalf("%q does not match its own values", canon)
		}
		if exact && !hasIss && !slices.Contains(f.Anchors(), sel.Anchor()) {
			t.Fatalf("%q: anchor %q not among %q", canon, sel.Anchor(), f.Anchors())
		}
	})
}

func setFact(f *Facts, key, v string) {
	switch key {
	case KeySubject:
		f.Subject = v
	case KeyUpstream:
		f.Upstream = v
	case KeyTrustDomain:
		f.TrustDomain = v
	case KeyClientID:
		f.ClientID = v
	case KeyJTI:
		f.JTI = v
	case KeyBinding:
		f.Binding = v
	case KeyKeyID:
		f.KeyID = v
	}
}

func TestEntryInvalidates(t *testing.T) {
	created := time.Date(2030, 1, 1, 12, 0, 0, 500e6, time.UTC)
	e := Entry{ID: "e1", Kind: KindRevoke, Selector: "sub=alice", Created: created, Expires: created.Add(time.Hour)}
	at := func(d time.Duration) *Facts { return &Facts{Subject: "alice", IssuedAt: created.Add(d)} }
	now := created.Add(time.Minute)
	tests := []struct {
		name string
		e    Entry
		f    *Facts
		now  time.Time
		want bool
	}{
		{"issued before", e, at(-time.Hour), now, true},
		{"same second, earlier", e, at(-400 * time.Millisecond), now, true},
		{"same second, later", e, at(400 * time.Millisecond), now, true},
		{"next second", e, at(500 * time.Millisecond), now, false},
		{"other subject", e, &Facts{Subject: "bob", IssuedAt: created}, now, false},
		{"no iat", e, &Facts{Subject: "alice"}, now, true},
		{"expired", e, at(-time.Hour), created.Add(time.Hour), false},
		{"lifted", func() Entry { e := e; e.Lifted = true; return e }(), at(-time.Hour), now, false},
		{"block", func() Entry { e := e; e.Kind = KindBlock; return e }(), at(-time.Hour), now, false},
		{"bad selector fails closed", func() Entry { e := e; e.Selector = "sub="; return e }(), at(-time.Hour), now, true},
	}
	for _, tt := range tests {
		if got := tt.e.Invalidates(tt.f, tt.now); got != tt.want {
			t.Errorf("%s: Invalidates = %v, want %v", tt.name, got, tt.want)
		}
	}
	b := Entry{ID: "b", Kind: KindBlock, Selector: "sub=alice", Created: created}
	if !b.Blocks(at(0), now.Add(1000*time.Hour)) || !b.Active(now) {
		t.Error("open-ended block is not active")
	}
	if b.Blocks(&Facts{Subject: "bob"}, now) {
		t.Error("block matches another subject")
	}
}

func TestEntryJSON(t *testing.T) {
	e := Entry{
		ID: "e1", Kind: KindBlock, Selector: `sub="a,b"`, Reason: "r", Actor: "admin",
		Created: time.UnixMilli(1700000000123), Lifted: true,
	}
	b, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"e1","kind":"block","selector":"sub=\"a,b\"","reason":"r","actor":"admin","created":1700000000123,"expires":0,"lifted":true}`
	if string(b) != want {
		t.Errorf("JSON = %s\nwant   %s", b, want)
	}
	var back Entry
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if !back.Created.Equal(e.Created) || !back.Expires.IsZero() || back.ID != e.ID || back.Selector != e.Selector || !back.Lifted {
		t.Errorf("round trip = %+v", back)
	}
	if err := back.UnmarshalJSON([]byte(`{"created":"x"}`)); err == nil {
		t.Error("bad JSON accepted")
	}
}

func TestFingerprint(t *testing.T) {
	attrs := map[string]string{"image": "sha256:abc", "node": "n1", "other": "x"}
	fp := Fingerprint(attrs, []string{"node", "image"})
	if len(fp) != 22 || strings.ContainsAny(fp, "+/=") {
		t.Errorf("Fingerprint = %q, want 22 base64url characters", fp)
	}
	if got := Fingerprint(attrs, []string{"image", "node", "image", "absent"}); got != fp {
		t.Errorf("order, duplicates or absent names change the fingerprint: %q != %q", got, fp)
	}
	if got := Fingerprint(map[string]string{"image": "sha256:abc", "node": "n2"}, []string{"image", "node"}); got == fp {
		t.Error("a changed value keeps the fingerprint")
	}
	// No two attribute sets encode alike.
	if Fingerprint(map[string]string{"a": "b=c"}, []string{"a", "a=b"}) == Fingerprint(map[string]string{"a=b": "c"}, []string{"a", "a=b"}) {
		t.Error("ambiguous encoding")
	}
	if got := Fingerprint(attrs, []string{"absent"}); got != "" {
		t.Errorf("Fingerprint of absent names = %q, want empty", got)
	}
	if got := Fingerprint(nil, nil); got != "" {
		t.Errorf("Fingerprint(nil) = %q", got)
	}
}

func TestFactsFromClaims(t *testing.T) {
	f := FactsFromClaims(map[string]any{
		"jti": "j", "sub": "spiffe://corp.example/ns/a", "upstream": "corp", "aud": []any{"a", 3, "b"},
		"client_id": "ci", "bnd": "fp", "iat": 1700000000.9,
		"attributes": map[string]any{"team": "blue", "n": 3.0, "ok": true, "obj": map[string]any{}},
	})
	if f.JTI != "j" || f.Subject != "spiffe://corp.example/ns/a" || f.Upstream != "corp" || f.TrustDomain != "corp.example" ||
		f.ClientID != "ci" || f.Binding != "fp" || !slices.Equal(f.Audiences, []string{"a", "b"}) ||
		!f.IssuedAt.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("facts = %+v", f)
	}
	if len(f.Attributes) != 3 || f.Attributes["team"] != "blue" || f.Attributes["n"] != "3" || f.Attributes["ok"] != "true" {
		t.Errorf("attributes = %v", f.Attributes)
	}
	g := FactsFromClaims(map[string]any{"aud": "x", "sub": 5, "iat": "soon"})
	if !slices.Equal(g.Audiences, []string{"x"}) || g.Subject != "" || !g.IssuedAt.IsZero() {
		t.Errorf("facts = %+v", g)
	}
}

func TestIndex(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	x := NewIndex()
	put := func(id string, kind Kind, sel string, created time.Time, expires time.Time) {
		t.Helper()
		if err := x.Put(Entry{ID: id, Kind: kind, Selector: sel, Created: created, Expires: expires}); err != nil {
			t.Fatal(err)
		}
	}
	put("r1", KindRevoke, "sub=alice", now, now.Add(time.Hour))
	put("r2", KindRevoke, "sub=spiffe://corp/*", now.Add(time.Second), now.Add(time.Hour))
	put("b1", KindBlock, "upstream=corp,attr.team=red", now, time.Time{})
	put("b2", KindBlock, "sub=old", now, now.Add(time.Minute))

	alice := &Facts{Subject: "alice", IssuedAt: now}
	if e := x.Revoked(alice, now); e == nil || e.ID != "r1" {
		t.Errorf("Revoked(alice) = %v", e)
	}
	if e := x.Revoked(&Facts{Subject: "alice", IssuedAt: now.Add(time.Second)}, now); e != nil {
		t.Errorf("Revoked(alice later) = %v", e)
	}
	if e := x.Revoked(&Facts{Subject: "spiffe://corp/x", IssuedAt: now}, now); e == nil || e.ID != "r2" {
		t.Errorf("Revoked(spiffe) = %v", e)
	}
	if e := x.Blocked(&Facts{Upstream: "corp", Attributes: map[string]string{"team": "red"}}, now); e == nil || e.ID != "b1" {
		t.Errorf("Blocked(red) = %v", e)
	}
	if e := x.Blocked(&Facts{Upstream: "corp", Attributes: map[string]string{"team": "blue"}}, now); e != nil {
		t.Errorf("Blocked(blue) = %v", e)
	}
	if e := x.Blocked(&Facts{Subject: "old"}, now.Add(time.Minute)); e != nil {
		t.Errorf("expired block applies: %v", e)
	}
	if n := x.Prune(now.Add(time.Minute)); n != 1 || x.Len() != 3 {
		t.Errorf("Prune = %d, Len = %d", n, x.Len())
	}
	if err := x.Apply(Event{Type: EventLifted, Entry: Entry{ID: "r1"}}); err != nil {
		t.Fatal(err)
	}
	if e := x.Revoked(alice, now); e != nil {
		t.Errorf("lifted entry applies: %v", e)
	}
	if got := len(x.Entries(now)); got != 2 {
		t.Errorf("Entries = %d, want 2", got)
	}
	if err := x.Put(Entry{ID: "bad", Kind: KindRevoke, Selector: "iss=x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put(iss) = %v", err)
	}
}
