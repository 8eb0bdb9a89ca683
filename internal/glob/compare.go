package glob

// Comparing patterns (for reviews, not for matching): a pattern is read as a
// sequence of tokens, each a byte that matches itself or a star that matches a
// run of bytes: any run (a Legacy '*', a Segments '**') or a run without
// separators (a Segments '*').

// tokKind is what a token matches.
type tokKind uint8

const (
	tokByte tokKind = iota // the byte itself
	tokSeg                 // a run of bytes without ':' or '/'
	tokAny                 // a run of any bytes
)

type token struct {
	kind tokKind
	b    byte
}

// tokens reads g as tokens: a run of stars is one star, which matches any run
// unless it is a lone Segments '*'.
func (g *Glob) tokens() []token {
	p := g.pattern
	out := make([]token, 0, len(p))
	for i := 0; i < len(p); {
		if p[i] != '*' {
			out = append(out, token{kind: tokByte, b: p[i]})
			i++
			continue
		}
		j := i
		for j < len(p) && p[j] == '*' {
			j++
		}
		k := tokAny
		if g.mode == Segments && j-i == 1 {
			k = tokSeg
		}
		out = append(out, token{kind: k})
		i = j
	}
	return out
}

// star reports whether t is a star.
func (t token) star() bool { return t.kind != tokByte }

// takes reports whether star s may match the byte (or, when t is a star, every
// run) that t matches.
func (s token) takes(t token) bool {
	switch {
	case s.kind == tokAny:
		return true
	case t.kind == tokByte:
		return !isSep(t.b)
	}
	return t.kind == tokSeg
}

// Overlap reports whether some string matches both a and b, each in its own mode.
// It is exact.
func Overlap(a, b *Glob) bool {
	switch {
	case a.Literal():
		return b.Match(a.pattern)
	case b.Literal():
		return a.Match(b.pattern)
	}
	return reach(a.tokens(), b.tokens(), false)
}

// Covers reports that every string h matches, g matches too, each in its own
// mode. It is sound, not complete: true only when so, and false where it cannot
// tell. g covers h when g matches h's text with each star of h taken by a star of
// g that matches at least as much (a lone Segments '*' does not take a '**' or a
// Legacy '*'). For two Legacy patterns it is g.Match(h.Pattern()).
func (g *Glob) Covers(h *Glob) bool {
	if g.Literal() {
		return h.Literal() && g.pattern == h.pattern
	}
	return reach(g.tokens(), h.tokens(), true)
}

// reach runs a over b, token by token, and reports whether both can end
// together. State (i, j) is "a's first i tokens and b's first j tokens have
// matched the same text". Every step adds to i or j, so the states are filled in
// row by row.
//
// Without cover (Overlap), a star may match the empty run, or a byte of the other
// pattern its class allows; two stars together match what both allow, which
// needs no step of its own (both stay). With cover (a covers b), only a's stars
// may match the empty run, and each of b's tokens, star or byte, must be taken
// by a byte of a equal to it or by a star of a that takes it.
func reach(a, b []token, cover bool) bool {
	prev := make([]bool, len(b)+1)
	cur := make([]bool, len(b)+1)
	for i := 0; i <= len(a); i++ {
		for j := 0; j <= len(b); j++ {
			ok := i == 0 && j == 0
			if !ok && i > 0 && a[i-1].star() && prev[j] {
				ok = true // a's star i-1 ends, having matched what it had
			}
			if !ok && j > 0 {
				t := b[j-1]
				switch {
				case !cover && t.star() && cur[j-1]:
					ok = true // b's star j-1 ends
				case i < len(a) && a[i].star() && a[i].takes(t) && cur[j-1]:
					ok = true // a's star i takes b's token j-1
				case i > 0 && t.kind == tokByte && a[i-1].kind == tokByte && a[i-1].b == t.b && prev[j-1]:
					ok = true // two equal bytes
				}
			}
			if !ok && !cover && i > 0 && j < len(b) && b[j].star() && a[i-1].kind == tokByte && b[j].takes(a[i-1]) && prev[j] {
				ok = true // b's star j takes a's byte i-1
			}
			cur[j] = ok
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EffectiveMode is the mode that decides what g matches: its own, or Legacy when
// its text matches the same in both modes (it has no lone '*': only literal
// bytes, or runs of two or more stars). Two globs of the same text match the same
// strings exactly when their EffectiveMode is the same.
func (g *Glob) EffectiveMode() Mode {
	if g.mode == Legacy {
		return Legacy
	}
	for _, t := range g.tokens() {
		if t.kind == tokSeg {
			return Segments
		}
	}
	return Legacy
}
