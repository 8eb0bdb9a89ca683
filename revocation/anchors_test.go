package revocation

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEachAnchorAgreesWithAnchors: the anchors a store reads without building
// them are those Anchors lists, and AnchorCount counts what EachAnchor yields.
func TestEachAnchorAgreesWithAnchors(t *testing.T) {
	cases := []*Facts{
		{},
		{Subject: "s"},
		{JTI: "j", KeyID: "k1", Subject: "system:serviceaccount:payments:api", ClientID: "c", Binding: "b",
			Upstream: "cluster-a", TrustDomain: "corp", Audiences: []string{"https://a", "https://b", "https://a"},
			Attributes: map[string]string{"namespace": "payments", "empty": "", "bad name": "x"}},
		{Subject: "spiffe://corp/" + strings.Repeat("a/", 2*MaxSubPrefixes)},
		{Subject: strings.Repeat("x", 300), Audiences: []string{strings.Repeat("y", 300)}}, // beyond the stack buffer
	}
	for _, f := range cases {
		var got []string
		f.EachAnchor(func(a []byte) { got = append(got, string(a)) })
		if n := f.AnchorCount(); n != len(got) {
			t.Errorf("AnchorCount = %d, EachAnchor yielded %d (%q)", n, len(got), got)
		}
		slices.Sort(got)
		got = slices.Compact(got)
		if want := f.Anchors(); !slices.Equal(got, want) {
			t.Errorf("EachAnchor = %q, Anchors = %q", got, want)
		}
	}
	var nilFacts *Facts
	if nilFacts.AnchorCount() != 0 || nilFacts.Anchors() != nil {
		t.Error("nil facts have anchors")
	}
}

// TestIndexLookupAllocs: checking a workload against the index allocates nothing
// while nothing matches (the hot path of every exchange).
func TestIndexLookupAllocs(t *testing.T) {
	x := NewIndex()
	now := time.Now()
	f := &Facts{Subject: "system:serviceaccount:payments:api", Upstream: "cluster-a", ClientID: "system:serviceaccount:payments:api",
		Audiences: []string{"https://ledger.internal"}, Attributes: map[string]string{"namespace": "payments"}}
	if n := testing.AllocsPerRun(100, func() { _ = x.Blocked(f, now) }); n != 0 {
		t.Errorf("empty index: %v allocations per lookup", n)
	}
	sel, err := NewSelector(KeySubject, "system:serviceaccount:billing:api")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Put(Entry{ID: "b1", Kind: KindBlock, Selector: sel.String(), Created: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = x.Blocked(f, now) }); n != 0 {
		t.Errorf("no match: %v allocations per lookup", n)
	}
	f.Subject = "system:serviceaccount:billing:api"
	if e := x.Blocked(f, now); e == nil || e.ID != "b1" {
		t.Errorf("Blocked = %v, want b1", e)
	}
}
