package glob

import (
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
// Matching never allocates and never backtracks: Legacy patterns place their
// literals leftmost; Segments patterns cut the subject at its separators, and
// around '**' place each run between them where it ends earliest (chunks.go). The
// cost is O(len(pattern) * len(subject)) at worst.
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
	// Segments: simple is set when the text from the first to the last star is
	// one '*' (simpleStar) or one '**' (simpleAny).
	simple uint8
	// Segments without '**': the pattern cut at its separators into pieces (each
	// a Legacy glob, which cannot meet a separator) and the separators in order.
	pieces []Glob
	seps   string
	// Segments with '**': the pattern cut at its runs of two or more stars.
	chunks []chunk
}

const (
	simpleNone uint8 = iota
	simpleStar
	simpleAny
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
		switch {
		case mid == "*":
			g.simple = simpleStar
		case strings.Trim(mid, "*") == "" && len(mid) > 1:
			g.simple = simpleAny
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
			return g
		}
		for i := 0; ; {
			j := strings.Index(pattern[i:], "**")
			if j < 0 {
				g.chunks = append(g.chunks, newChunk(pattern[i:]))
				break
			}
			g.chunks = append(g.chunks, newChunk(pattern[i:i+j]))
			i += j
			for i < len(pattern) && pattern[i] == '*' {
				i++
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
		return g.matchChunks(s)
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
