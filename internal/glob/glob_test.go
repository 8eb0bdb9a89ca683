package glob

import (
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{
			pattern: "system:serviceaccount:payments:api",
			match:   []string{"system:serviceaccount:payments:api"},
			noMatch: []string{"", "system:serviceaccount:payments:api2", "xsystem:serviceaccount:payments:api", "System:serviceaccount:payments:api"},
		},
		{
			pattern: "*",
			match:   []string{"", "a", "system:serviceaccount:x:y", "spiffe://td/ns/a/sa/b", "*"},
		},
		{
			pattern: "**",
			match:   []string{"", "abc"},
		},
		{
			pattern: "system:serviceaccount:payments:*", // prefix
			match:   []string{"system:serviceaccount:payments:", "system:serviceaccount:payments:api", "system:serviceaccount:payments:a:b/c"},
			noMatch: []string{"system:serviceaccount:payments", "system:serviceaccount:payments-x:api", "system:serviceaccount:PAYMENTS:api", "xsystem:serviceaccount:payments:api"},
		},
		{
			pattern: "*/sa/reporter", // suffix
			match:   []string{"/sa/reporter", "spiffe://b.example/ns/x/sa/reporter"},
			noMatch: []string{"spiffe://b.example/ns/x/sa/reporter2", "spiffe://b.example/ns/x/sa/Reporter", "/sa/reporte"},
		},
		{
			pattern: "spiffe://b.example/ns/*/sa/reporter", // middle
			match:   []string{"spiffe://b.example/ns//sa/reporter", "spiffe://b.example/ns/x/sa/reporter", "spiffe://b.example/ns/x/y/sa/reporter"},
			noMatch: []string{"spiffe://b.example/ns/x/sa/reporter/", "spiffe://c.example/ns/x/sa/reporter", "spiffe://b.example/ns/sa/reporter"},
		},
		{
			pattern: "a*b*c",
			match:   []string{"abc", "aXbYc", "abbbc", "acbc", "abcbc"},
			noMatch: []string{"ab", "acb", "abcx", "xabc"},
		},
		{
			pattern: "ab*ba", // prefix and suffix must not overlap
			match:   []string{"abba", "abXba"},
			noMatch: []string{"aba", "ab", "ba"},
		},
		{
			pattern: "*a*a*",
			match:   []string{"aa", "xaxax", "aaa"},
			noMatch: []string{"a", "xax", ""},
		},
		{
			pattern: "*:debug-*",
			match:   []string{"system:serviceaccount:payments:debug-shell", ":debug-"},
			noMatch: []string{"system:serviceaccount:payments:api", "debug-shell"},
		},
		{
			pattern: "ünï*cødé",
			match:   []string{"ünïcødé", "ünï-x-cødé"},
			noMatch: []string{"unicode", "ÜNÏcødé"},
		},
	}
	for _, tt := range tests {
		g := Compile(tt.pattern)
		for _, s := range tt.match {
			if !g.Match(s) {
				t.Errorf("%q should match %q", tt.pattern, s)
			}
			if !refMatch(tt.pattern, s) {
				t.Errorf("reference: %q should match %q", tt.pattern, s)
			}
		}
		for _, s := range tt.noMatch {
			if g.Match(s) {
				t.Errorf("%q should not match %q", tt.pattern, s)
			}
			if refMatch(tt.pattern, s) {
				t.Errorf("reference: %q should not match %q", tt.pattern, s)
			}
		}
	}
}

func TestGlobNoAllocs(t *testing.T) {
	g := Compile("spiffe://*/ns/*/sa/*")
	allocs := testing.AllocsPerRun(100, func() {
		if !g.Match("spiffe://td/ns/payments/sa/api") {
			t.Fatal("no match")
		}
	})
	if allocs != 0 {
		t.Errorf("match allocates %v times", allocs)
	}
}

// refMatch is an obviously correct glob matcher: dynamic programming over bytes,
// where m[i][j] says whether pattern[i:] matches s[j:].
func refMatch(pattern, s string) bool {
	m := make([][]bool, len(pattern)+1)
	for i := range m {
		m[i] = make([]bool, len(s)+1)
	}
	m[len(pattern)][len(s)] = true
	for i := len(pattern) - 1; i >= 0; i-- {
		for j := len(s); j >= 0; j-- {
			if pattern[i] == '*' {
				// '*' matches nothing, or one more byte.
				m[i][j] = m[i+1][j] || (j < len(s) && m[i][j+1])
			} else {
				m[i][j] = j < len(s) && pattern[i] == s[j] && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}

func FuzzGlob(f *testing.F) {
	f.Add("*", "")
	f.Add("a*b*c", "aXbYc")
	f.Add("ab*ba", "aba")
	f.Add("*a*a*", "xax")
	f.Add("system:serviceaccount:payments:*", "system:serviceaccount:payments:api")
	f.Add("spiffe://b.example/ns/*/sa/reporter", "spiffe://b.example/ns/x/sa/reporter")
	f.Add("**x**", "yxy")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return // keep the quadratic reference fast
		}
		g := Compile(pattern)
		if got, want := g.Match(s), refMatch(pattern, s); got != want {
			t.Fatalf("match(%q, %q) = %v, reference says %v", pattern, s, got, want)
		}
		// A pattern matches itself with every '*' read as nothing.
		if !g.Match(strings.ReplaceAll(pattern, "*", "")) {
			t.Fatalf("%q does not match its own literal text", pattern)
		}
	})
}
