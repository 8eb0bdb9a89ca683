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

// refMatch is an obviously correct Legacy matcher.
func refMatch(pattern, s string) bool { return refMatchMode(pattern, s, Legacy) }

// refMatchMode is an obviously correct glob matcher: dynamic programming over
// bytes, where m[i][j] says whether pattern[i:] matches s[j:].
func refMatchMode(pattern, s string, mode Mode) bool {
	m := make([][]bool, len(pattern)+1)
	for i := range m {
		m[i] = make([]bool, len(s)+1)
	}
	m[len(pattern)][len(s)] = true
	for i := len(pattern) - 1; i >= 0; i-- {
		for j := len(s); j >= 0; j-- {
			if pattern[i] == '*' {
				run := 1
				for i+run < len(pattern) && pattern[i+run] == '*' {
					run++
				}
				// A star (or run of stars) matches nothing, or one more byte;
				// in Segments mode a single star never a separator.
				more := j < len(s) && (mode == Legacy || run > 1 || (s[j] != ':' && s[j] != '/'))
				if mode == Segments && i > 0 && pattern[i-1] == '*' {
					// inside a run: the run's first star decides.
					m[i][j] = m[i+1][j]
					continue
				}
				m[i][j] = m[i+run][j] || (more && m[i][j+1])
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

func TestGlobSegments(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{
			pattern: "repo:acme/*",
			match:   []string{"repo:acme/app", "repo:acme/"},
			noMatch: []string{"repo:acme/app:pull_request", "repo:acme/app:environment:prod", "repo:acme/app/x", "repo:acme"},
		},
		{
			pattern: "repo:acme/**",
			match:   []string{"repo:acme/app", "repo:acme/app:pull_request", "repo:acme/"},
			noMatch: []string{"repo:acme", "repo:acmex/app"},
		},
		{
			pattern: "repo:acme/*:ref:refs/heads/*",
			match:   []string{"repo:acme/app:ref:refs/heads/main"},
			noMatch: []string{"repo:acme/app:ref:refs/heads/feature/x", "repo:acme/app:pull_request", "repo:acme/a/b:ref:refs/heads/main"},
		},
		{
			pattern: "system:serviceaccount:*:api",
			match:   []string{"system:serviceaccount:payments:api", "system:serviceaccount::api"},
			noMatch: []string{"system:serviceaccount:a:b:api", "system:serviceaccount:payments:api2"},
		},
		{
			pattern: "spiffe://td/ns/*/sa/*",
			match:   []string{"spiffe://td/ns/x/sa/y"},
			noMatch: []string{"spiffe://td/ns/x/y/sa/z", "spiffe://td/ns/x/sa/y/z"},
		},
		{
			pattern: "spiffe://td/**/sa/*",
			match:   []string{"spiffe://td/ns/x/sa/y", "spiffe://td//sa/y", "spiffe://td/a/sa/b/sa/c"},
			noMatch: []string{"spiffe://td/ns/x/sa/y/z", "spiffe://tdx/ns/sa/y"},
		},
		{
			pattern: "*",
			match:   []string{"", "abc", "a.b-c"},
			noMatch: []string{"a:b", "/", "a/b"},
		},
		{
			pattern: "**",
			match:   []string{"", "a:b/c"},
		},
		{
			pattern: "***",
			match:   []string{"", "a:b/c"},
		},
		{
			pattern: "*a*b*",
			match:   []string{"ab", "xaybz"},
			noMatch: []string{"a:b", "xa/b"},
		},
		{
			pattern: "**:*",
			match:   []string{"a:b", "a:b:c", ":"},
			noMatch: []string{"ab", "a:b/c"},
		},
		{
			pattern: "a**b**c",
			match:   []string{"abc", "a:b/c", "a-x:yb:c", "abbc"},
			noMatch: []string{"ab", "a:c", "xabc"},
		},
		{
			pattern: "x:*:**:y*z:*",
			match:   []string{"x:a::yz:", "x:a:b/c:yQz:w", "x::q:yz:yz:k"},
			noMatch: []string{"x:a:yz:w", "x:a:b:yz:w/v", "x:a/b:c:yz:w"},
		},
		{
			pattern: "**/sa/*-a*b",
			match:   []string{"ns/x/sa/q-ab", "/sa/-aXb", "/sa/x/sa/q-ab"},
			noMatch: []string{"/sa/q-ab/c", "/sa/q-ba", "/sa/a/-ab"},
		},
	}
	for _, tt := range tests {
		g := CompileMode(tt.pattern, Segments)
		for _, s := range tt.match {
			if !g.Match(s) {
				t.Errorf("%q should match %q", tt.pattern, s)
			}
			if !refMatchMode(tt.pattern, s, Segments) {
				t.Errorf("reference: %q should match %q", tt.pattern, s)
			}
		}
		for _, s := range tt.noMatch {
			if g.Match(s) {
				t.Errorf("%q should not match %q", tt.pattern, s)
			}
			if refMatchMode(tt.pattern, s, Segments) {
				t.Errorf("reference: %q should not match %q", tt.pattern, s)
			}
		}
	}
}

func TestGlobSegmentsLong(t *testing.T) {
	// A long pattern with '**' and separators between the stars.
	mid := strings.Repeat("ab:", 200)
	g := CompileMode("x*"+mid+"*y", Segments)
	if d := CompileMode("x**"+mid+"*y", Segments); !d.Match("xq:r"+mid+"zy") || d.Match("xq:r"+mid+"z:y") {
		t.Error("long '**' pattern")
	}
	if !g.Match("xq" + mid + "zy") {
		t.Error("long pattern should match")
	}
	if g.Match("xq" + mid + "z:y") {
		t.Error("long pattern should not match a separator in a '*'")
	}
}

func TestCrossesSegments(t *testing.T) {
	for p, want := range map[string]bool{
		"repo:acme/*": true, "*:debug": true, "*": false, "prod-*": false, "repo:acme/app": false,
	} {
		g := Compile(p)
		if got := g.CrossesSegments(); got != want {
			t.Errorf("Compile(%q).CrossesSegments() = %v, want %v", p, got, want)
		}
		s := CompileMode(p, Segments)
		if s.CrossesSegments() {
			t.Errorf("a Segments pattern %q never crosses by accident", p)
		}
	}
}

func TestGlobSegmentsNoAllocs(t *testing.T) {
	for _, p := range []string{"spiffe://*/ns/*/sa/*", "repo:acme/*", "repo:**/x*y"} {
		g := CompileMode(p, Segments)
		allocs := testing.AllocsPerRun(100, func() {
			g.Match("spiffe://td/ns/payments/sa/api")
			g.Match("repo:acme/app/x1y")
		})
		if allocs != 0 {
			t.Errorf("%q: match allocates %v times", p, allocs)
		}
	}
}

func FuzzGlobSegments(f *testing.F) {
	f.Add("*", "a:b")
	f.Add("**", "a:b")
	f.Add("repo:acme/*", "repo:acme/app:pull_request")
	f.Add("spiffe://td/**/sa/*", "spiffe://td/a/sa/b/sa/c")
	f.Add("*a**b*", "xa:b")
	f.Add("**:*", "a:b/c")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return
		}
		g := CompileMode(pattern, Segments)
		got := g.Match(s)
		if want := refMatchMode(pattern, s, Segments); got != want {
			t.Fatalf("segments match(%q, %q) = %v, reference says %v", pattern, s, got, want)
		}
		// Segments is never broader than Legacy.
		if l := Compile(pattern); got && !l.Match(s) {
			t.Fatalf("segments %q matches %q and legacy does not", pattern, s)
		}
		if !g.Match(strings.ReplaceAll(pattern, "*", "")) {
			t.Fatalf("%q does not match its own literal text", pattern)
		}
	})
}

var benchSink bool

func BenchmarkMatch(b *testing.B) {
	cases := []struct{ name, pattern, subject string }{
		{"literal", "system:serviceaccount:payments:api", "system:serviceaccount:payments:api"},
		{"prefix", "system:serviceaccount:payments:*", "system:serviceaccount:payments:api"},
		{"middle", "spiffe://td/ns/*/sa/reporter", "spiffe://td/ns/payments/sa/reporter"},
		{"three", "spiffe://*/ns/*/sa/*", "spiffe://td/ns/payments/sa/api"},
		{"github", "repo:acme/*:ref:refs/heads/*", "repo:acme/app:ref:refs/heads/main"},
		{"doublestar", "spiffe://td/**/sa/*", "spiffe://td/ns/payments/sa/api"},
	}
	for _, mode := range []Mode{Legacy, Segments} {
		for _, c := range cases {
			g := CompileMode(c.pattern, mode)
			b.Run(mode.String()+"/"+c.name, func(b *testing.B) {
				for b.Loop() {
					benchSink = g.Match(c.subject)
				}
			})
		}
	}
}
