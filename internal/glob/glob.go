package glob

import "strings"

// Glob is a compiled subject pattern. '*' matches any run of bytes, including none
// and including ':' and '/'; every other byte matches itself. A pattern is anchored
// at both ends: "a:*" matches "a:b" but not "xa:b". There is no escape: a pattern
// cannot match a literal '*' only.
//
// Matching never allocates and runs in O(len(pattern) * len(subject)) at worst
// (strings.Index per literal segment), without backtracking.
type Glob struct {
	pattern string
	// star is false for a literal pattern, which matches by equality.
	star bool
	// prefix and suffix are the literal text before the first and after the last
	// '*'; middle holds the non-empty literal segments between stars, in order.
	prefix, suffix string
	middle         []string
}

// Compile compiles pattern. Every string is a valid pattern.
func Compile(pattern string) Glob {
	g := Glob{pattern: pattern}
	first := strings.IndexByte(pattern, '*')
	if first < 0 {
		return g
	}
	last := strings.LastIndexByte(pattern, '*')
	g.star = true
	g.prefix = pattern[:first]
	g.suffix = pattern[last+1:]
	for seg := range strings.SplitSeq(pattern[first+1:last+1], "*") {
		if seg != "" {
			g.middle = append(g.middle, seg)
		}
	}
	return g
}

// Match reports whether s matches the whole pattern.
func (g *Glob) Match(s string) bool {
	if !g.star {
		return s == g.pattern
	}
	if len(s) < len(g.prefix)+len(g.suffix) ||
		!strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	// The prefix and suffix are pinned; each middle segment is then taken at its
	// leftmost occurrence in what remains. Leftmost is always safe: any match that
	// places a segment further right leaves a subset of the room a leftmost
	// placement leaves for the segments after it.
	s = s[len(g.prefix) : len(s)-len(g.suffix)]
	for _, seg := range g.middle {
		i := strings.Index(s, seg)
		if i < 0 {
			return false
		}
		s = s[i+len(seg):]
	}
	return true
}

// Pattern returns the source pattern.
func (g *Glob) Pattern() string { return g.pattern }

// Literal reports whether the pattern has no '*' (it matches one string only).
func (g *Glob) Literal() bool { return !g.star }

// Prefix is the literal text before the first '*' (the whole pattern when Literal).
func (g *Glob) Prefix() string {
	if !g.star {
		return g.pattern
	}
	return g.prefix
}
