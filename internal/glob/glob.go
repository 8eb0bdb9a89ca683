package glob

import (
	"math/bits"
	"strings"
)

// Mode selects what '*' matches.
type Mode uint8

const (
	// Legacy: '*' matches any run of bytes, ':' and '/' included.
	Legacy Mode = iota
	// Segments: '*' matches a run of bytes without ':' or '/'; '**' (or more stars)
	// matches any run of bytes.
	Segments
)

// String names the mode.
func (m Mode) String() string {
	if m == Segments {
		return "segments"
	}
	return "legacy"
}

// Separators are the bytes a Segments '*' does not match.
const Separators = ":/"

func isSep(c byte) bool { return c == ':' || c == '/' }

// indexSep is the index of the first separator in s, or -1.
func indexSep(s string) int {
	for i := 0; i < len(s); i++ {
		if isSep(s[i]) {
			return i
		}
	}
	return -1
}

// Glob is a compiled pattern (see the package documentation). The zero Glob is the
// empty literal pattern.
//
// Matching never allocates (but for Segments patterns whose text between the first
// and the last star is longer than 255 bytes) and runs in O(len(pattern) *
// len(subject)) at worst, without backtracking.
type Glob struct {
	pattern string
	mode    Mode
	// star is false for a literal pattern, which matches by equality.
	star bool
	// prefix and suffix are the literal text before the first and after the last
	// '*'; middle holds the non-empty literal segments between stars, in order
	// (Legacy).
	prefix, suffix string
	middle         []string
	// Segments: the pattern from its first to its last star, as tokens for the
	// NFA; simple is set when that is one '*' (simpleStar) or one '**'
	// (simpleAny), which need no NFA.
	toks   []tok
	simple uint8
	// Segments without '**': the pattern cut at its separators into pieces (each
	// a Legacy glob, which cannot meet a separator) and the separators in order.
	pieces []Glob
	seps   string
}

const (
	simpleNone uint8 = iota
	simpleStar
	simpleAny
)

// tok is one token of a Segments pattern: a literal byte, '*' or '**'.
type tok struct {
	kind uint8
	b    byte
}

const (
	tokLit uint8 = iota
	tokStar
	tokAny
)

// Compile compiles pattern with Legacy semantics. Every string is a valid pattern.
func Compile(pattern string) Glob { return CompileMode(pattern, Legacy) }

// CompileMode compiles pattern with the given semantics. Every string is a valid
// pattern.
func CompileMode(pattern string, mode Mode) Glob {
	g := Glob{pattern: pattern, mode: mode}
	first := strings.IndexByte(pattern, '*')
	if first < 0 {
		return g
	}
	last := strings.LastIndexByte(pattern, '*')
	g.star = true
	g.prefix = pattern[:first]
	g.suffix = pattern[last+1:]
	mid := pattern[first : last+1]
	if mode == Segments {
		for i := 0; i < len(mid); {
			if mid[i] != '*' {
				g.toks = append(g.toks, tok{kind: tokLit, b: mid[i]})
				i++
				continue
			}
			j := i
			for j < len(mid) && mid[j] == '*' {
				j++
			}
			k := tokStar
			if j-i > 1 {
				k = tokAny
			}
			g.toks = append(g.toks, tok{kind: k})
			i = j
		}
		if len(g.toks) == 1 {
			g.simple = simpleStar
			if g.toks[0].kind == tokAny {
				g.simple = simpleAny
			}
		}
		if !strings.Contains(pattern, "**") {
			// A '*' matches no separator, so the subject's separators must be
			// exactly the pattern's, and each piece matches a segment.
			rest := pattern
			for {
				i := indexSep(rest)
				if i < 0 {
					g.pieces = append(g.pieces, Compile(rest))
					break
				}
				g.pieces = append(g.pieces, Compile(rest[:i]))
				g.seps += rest[i : i+1]
				rest = rest[i+1:]
			}
		}
		return g
	}
	for seg := range strings.SplitSeq(mid[1:], "*") {
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
	if g.mode == Segments {
		mid := s[len(g.prefix) : len(s)-len(g.suffix)]
		switch {
		case g.simple == simpleStar:
			return indexSep(mid) < 0
		case g.simple == simpleAny:
			return true
		case g.pieces != nil:
			return g.matchPieces(s)
		}
		return g.matchNFA(mid)
	}
	s = s[len(g.prefix) : len(s)-len(g.suffix)]
	// The prefix and suffix are pinned; each middle segment is then taken at its
	// leftmost occurrence in what remains. Leftmost is always safe: any match that
	// places a segment further right leaves a subset of the room a leftmost
	// placement leaves for the segments after it.
	for _, seg := range g.middle {
		i := strings.Index(s, seg)
		if i < 0 {
			return false
		}
		s = s[i+len(seg):]
	}
	return true
}

// matchPieces matches a Segments pattern without '**': the subject's separators
// must be the pattern's, in order, and each segment must match its piece.
func (g *Glob) matchPieces(s string) bool {
	for k := range g.pieces {
		seg := s
		if k < len(g.seps) {
			i := indexSep(s)
			if i < 0 || s[i] != g.seps[k] {
				return false
			}
			seg, s = s[:i], s[i+1:]
		} else if indexSep(s) >= 0 {
			return false
		}
		if !g.pieces[k].Match(seg) {
			return false
		}
	}
	return true
}

// matchNFA runs the tokens (which start and end with a star) over s as a
// nondeterministic automaton: state i means "tokens [0, i) matched". Runs of stars
// are one token, so a star is never followed by a star and the empty-match closure
// is one step. Every step costs one operation per live state.
func (g *Glob) matchNFA(s string) bool {
	n := len(g.toks) + 1 // states
	words := (n + 63) / 64
	var bufA, bufB [4]uint64
	var cur, next []uint64
	if words <= len(bufA) {
		cur, next = bufA[:words], bufB[:words]
	} else {
		cur, next = make([]uint64, words), make([]uint64, words)
	}
	// State 0 is a star (the tokens start with one): it may match nothing.
	cur[0] = 1
	g.closure(cur)
	for i := 0; i < len(s); i++ {
		c := s[i]
		clear(next)
		alive := false
		for w, word := range cur {
			for word != 0 {
				b := bits.TrailingZeros64(word)
				word &^= 1 << b
				st := w*64 + b
				if st == len(g.toks) {
					continue // accepting, with input left
				}
				t := g.toks[st]
				switch {
				case t.kind == tokAny, t.kind == tokStar && !isSep(c):
					next[w] |= 1 << b
					alive = true
				case t.kind == tokLit && t.b == c:
					next[(st+1)/64] |= 1 << ((st + 1) % 64)
					alive = true
				}
			}
		}
		if !alive {
			return false
		}
		g.closure(next)
		cur, next = next, cur
	}
	last := len(g.toks)
	return cur[last/64]&(1<<(last%64)) != 0
}

// closure adds, for every live star state, the state after it (the star matching
// nothing more).
func (g *Glob) closure(set []uint64) {
	for w, word := range set {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &^= 1 << b
			st := w*64 + b
			if st < len(g.toks) && g.toks[st].kind != tokLit {
				set[(st+1)/64] |= 1 << ((st + 1) % 64)
			}
		}
	}
}

// Pattern returns the source pattern.
func (g *Glob) Pattern() string { return g.pattern }

// Mode returns the semantics the pattern was compiled with.
func (g *Glob) Mode() Mode { return g.mode }

// Literal reports whether the pattern has no '*' (it matches one string only).
func (g *Glob) Literal() bool { return !g.star }

// Prefix is the literal text before the first '*' (the whole pattern when Literal).
func (g *Glob) Prefix() string {
	if !g.star {
		return g.pattern
	}
	return g.prefix
}

// CrossesSegments reports whether a '*' of the pattern may match a ':' or '/' where
// the author probably meant one segment: a Legacy pattern with a '*' and a
// separator. ("*" alone, or "prod-*", which hold no separator, are not reported;
// Segments patterns say "**" when they mean to cross.)
func (g *Glob) CrossesSegments() bool {
	return g.mode == Legacy && g.star && strings.ContainsAny(g.pattern, Separators)
}
