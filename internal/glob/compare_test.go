package glob

import (
	"strings"
	"testing"
)

// all returns every string over alphabet of length up to n.
func all(alphabet string, n int) []string {
	out := []string{""}
	last := []string{""}
	for range n {
		var next []string
		for _, s := range last {
			for i := range len(alphabet) {
				next = append(next, s+alphabet[i:i+1])
			}
		}
		out = append(out, next...)
		last = next
	}
	return out
}

// Overlap and Covers against Match, for every pair of patterns of up to three
// bytes in both modes, on every string of up to seven bytes: a common string, if
// there is one, is at most as long as both patterns together (each step through
// both patterns reads at most one byte).
func TestOverlapCoversExhaustive(t *testing.T) {
	pats := all("a:*", 3)
	subjects := all("ab:", 7)
	modes := []Mode{Legacy, Segments}
	for _, pa := range pats {
		for _, pb := range pats {
			for _, ma := range modes {
				for _, mb := range modes {
					a, b := CompileMode(pa, ma), CompileMode(pb, mb)
					common, aOnly := "", ""
					foundCommon, foundBOnly := false, false
					for _, s := range subjects {
						ina, inb := a.Match(s), b.Match(s)
						if ina && inb && !foundCommon {
							common, foundCommon = s, true
						}
						if inb && !ina && !foundBOnly {
							aOnly, foundBOnly = s, true
						}
					}
					if got := Overlap(&a, &b); got != foundCommon {
						t.Fatalf("Overlap(%q %v, %q %v) = %v; common string %q found: %v", pa, ma, pb, mb, got, common, foundCommon)
					}
					covers := a.Covers(&b)
					if covers && foundBOnly {
						t.Fatalf("%q %v covers %q %v, but %q matches only the latter", pa, ma, pb, mb, aOnly)
					}
					if ma == Legacy && mb == Legacy && covers != a.Match(pb) {
						t.Fatalf("Legacy %q covers %q: %v, Match %v", pa, pb, covers, a.Match(pb))
					}
				}
			}
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		g      string
		gm     Mode
		h      string
		hm     Mode
		covers bool
	}{
		{"repo:acme/**", Legacy, "repo:acme/*", Segments, true},
		{"repo:acme/*", Legacy, "repo:acme/*", Segments, true},
		{"repo:acme/*", Segments, "repo:acme/**", Legacy, false},
		{"repo:acme/*", Segments, "repo:acme/*", Legacy, false},
		{"repo:acme/*", Segments, "repo:acme/app", Legacy, true},
		{"repo:acme/*", Segments, "repo:acme/app:pull_request", Legacy, false},
		{"repo:*", Segments, "repo:**", Segments, false},
		{"repo:**", Segments, "repo:*", Segments, true},
		{"system:serviceaccount:*:api", Segments, "system:serviceaccount:*:api", Segments, true},
		{"system:serviceaccount:*:api", Segments, "system:serviceaccount:*:api", Legacy, false},
		{"*", Segments, "a*b", Segments, true},
		{"a", Legacy, "a", Segments, true},
		{"a", Legacy, "a*", Legacy, false},
	}
	for _, tt := range tests {
		g, h := CompileMode(tt.g, tt.gm), CompileMode(tt.h, tt.hm)
		if got := g.Covers(&h); got != tt.covers {
			t.Errorf("%q (%v) covers %q (%v): %v, want %v", tt.g, tt.gm, tt.h, tt.hm, got, tt.covers)
		}
	}
}

func TestOverlap(t *testing.T) {
	tests := []struct {
		a       string
		am      Mode
		b       string
		bm      Mode
		overlap bool
	}{
		{"repo:acme/*", Segments, "repo:acme/app:*", Legacy, false},
		{"repo:acme/*", Legacy, "repo:acme/app:*", Legacy, true},
		{"repo:acme/**", Segments, "repo:acme/app:*", Legacy, true},
		{"system:serviceaccount:*:api", Segments, "system:serviceaccount:dev:*", Legacy, true},
		{"system:serviceaccount:*:api", Segments, "system:serviceaccount:dev:x:*", Legacy, false},
		{"*", Segments, "system:serviceaccount:dev:*", Legacy, false},
		{"*", Segments, "dev-*", Legacy, true},
		{"spiffe://td/*/x", Segments, "spiffe://td/a/*", Segments, true},
		{"spiffe://td/*/x", Segments, "spiffe://td/a/*/*", Segments, false},
		{"a*", Legacy, "*b", Legacy, true},
		{"a*", Legacy, "b*", Legacy, false},
	}
	for _, tt := range tests {
		a, b := CompileMode(tt.a, tt.am), CompileMode(tt.b, tt.bm)
		if got := Overlap(&a, &b); got != tt.overlap {
			t.Errorf("Overlap(%q (%v), %q (%v)) = %v, want %v", tt.a, tt.am, tt.b, tt.bm, got, tt.overlap)
		}
		if got := Overlap(&b, &a); got != tt.overlap {
			t.Errorf("Overlap(%q (%v), %q (%v)) = %v, want %v", tt.b, tt.bm, tt.a, tt.am, got, tt.overlap)
		}
	}
}

// Long patterns compare in time and memory linear in each.
func TestOverlapLong(t *testing.T) {
	a := CompileMode(strings.Repeat("a*", 2000)+"b", Segments)
	b := CompileMode("*"+strings.Repeat(":a", 2000), Legacy)
	if Overlap(&a, &b) {
		t.Fatal("a segment pattern overlaps one with separators")
	}
	if a.Covers(&b) || b.Covers(&a) {
		t.Fatal("covers")
	}
}

func TestEffectiveMode(t *testing.T) {
	for _, tt := range []struct {
		pattern string
		mode    Mode
		want    Mode
	}{
		{"repo:acme/*", Legacy, Legacy},
		{"repo:acme/*", Segments, Segments},
		{"repo:acme/**", Segments, Legacy},
		{"repo:acme/app", Segments, Legacy},
		{"a***b**", Segments, Legacy},
		{"a**b*", Segments, Segments},
	} {
		g := CompileMode(tt.pattern, tt.mode)
		if got := g.EffectiveMode(); got != tt.want {
			t.Errorf("%q (%v): %v, want %v", tt.pattern, tt.mode, got, tt.want)
		}
	}
}
