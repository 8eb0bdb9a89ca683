package glob

import "strings"

// A Segments pattern with '**' is chunks separated by runs of two or more stars:
// C0 ** C1 ** ... ** Cn, each chunk holding literals and single stars only, so a
// chunk's separators are the separators of whatever it matches. The subject is
// matched chunk by chunk, without backtracking: C0 at the start, ending as early as
// it can; each middle chunk anywhere after, ending as early as it can; Cn at the
// end. Ending early is always safe, as for the literals of a Legacy pattern: the
// '**' that follows takes whatever is left over.

// chunk is one run of a pattern between '**'s: pieces (Legacy globs without
// separators) joined by the separators seps.
type chunk struct {
	pieces []Glob
	seps   string
	// firstSuffix matches a segment one of whose suffixes pieces[0] matches.
	firstSuffix Glob
	// last is pieces[len(pieces)-1] cut at its stars, for the earliest end of a
	// match of it at the start of a segment.
	last []string
}

func newChunk(text string) chunk {
	var c chunk
	rest := text
	for {
		i := indexSep(rest)
		if i < 0 {
			c.pieces = append(c.pieces, Compile(rest))
			break
		}
		c.pieces = append(c.pieces, Compile(rest[:i]))
		c.seps += rest[i : i+1]
		rest = rest[i+1:]
	}
	c.firstSuffix = Compile("*" + c.pieces[0].Pattern())
	c.last = strings.Split(c.pieces[len(c.pieces)-1].Pattern(), "*")
	return c
}

// earliestEnd returns the smallest n such that the pattern cut into lits (at its
// stars) matches t[j:n], with j = 0 when anchored and any j otherwise; -1 when
// there is none. Each literal taken at its leftmost place ends earliest.
func earliestEnd(lits []string, t string, anchored bool) int {
	pos := 0
	if anchored {
		if !strings.HasPrefix(t, lits[0]) {
			return -1
		}
		pos = len(lits[0])
	} else {
		i := strings.Index(t, lits[0])
		if i < 0 {
			return -1
		}
		pos = i + len(lits[0])
	}
	for _, l := range lits[1:] {
		if l == "" {
			continue
		}
		i := strings.Index(t[pos:], l)
		if i < 0 {
			return -1
		}
		pos += i + len(l)
	}
	return pos
}

// segEnd is the end of the segment of s that starts at i.
func segEnd(s string, i int) int {
	if j := indexSep(s[i:]); j >= 0 {
		return i + j
	}
	return len(s)
}

// endFrom matches pieces[k:] from i, where pieces[k] starts a segment: the
// separators that follow must be the chunk's, the pieces but the last match whole
// segments, and the last a segment's start. It returns the earliest end, or -1.
func (c *chunk) endFrom(s string, i, k int) int {
	for ; k < len(c.seps); k++ {
		j := indexSep(s[i:])
		if j < 0 {
			return -1
		}
		j += i
		if s[j] != c.seps[k] || !c.pieces[k].Match(s[i:j]) {
			return -1
		}
		i = j + 1
	}
	n := earliestEnd(c.last, s[i:segEnd(s, i)], true)
	if n < 0 {
		return -1
	}
	return i + n
}

// prefixEnd is the earliest end of a match of the chunk starting at from.
func (c *chunk) prefixEnd(s string, from int) int { return c.endFrom(s, from, 0) }

// floatEnd is the earliest end of a match of the chunk starting anywhere at or
// after from, or -1.
func (c *chunk) floatEnd(s string, from int) int {
	start := from // the start of the segment (or of its part at or after from)
	for {
		if len(c.seps) == 0 {
			end := segEnd(s, start)
			if n := earliestEnd(c.last, s[start:end], false); n >= 0 {
				return start + n
			}
			if end == len(s) {
				return -1
			}
			start = end + 1
			continue
		}
		// The chunk's first separator at the next separator q: pieces[0] must
		// match a suffix of the segment before it. A later q ends later.
		q := indexSep(s[start:])
		if q < 0 {
			return -1
		}
		q += start
		if s[q] == c.seps[0] && c.firstSuffix.Match(s[start:q]) {
			if e := c.endFrom(s, q+1, 1); e >= 0 {
				return e
			}
		}
		start = q + 1
	}
}

// suffixMatch reports whether the chunk matches s[j:] for some j >= from: the
// chunk's separators are then the last ones of s.
func (c *chunk) suffixMatch(s string, from int) bool {
	end := len(s)
	for k := len(c.seps) - 1; k >= 0; k-- {
		j := lastIndexSep(s[from:end])
		if j < 0 {
			return false
		}
		j += from
		if s[j] != c.seps[k] || !c.pieces[k+1].Match(s[j+1:end]) {
			return false
		}
		end = j
	}
	start := from
	if j := lastIndexSep(s[from:end]); j >= 0 {
		start = from + j + 1
	}
	return c.firstSuffix.Match(s[start:end])
}

// matchChunks matches a Segments pattern with '**' (at least two chunks).
func (g *Glob) matchChunks(s string) bool {
	pos := g.chunks[0].prefixEnd(s, 0)
	if pos < 0 {
		return false
	}
	last := len(g.chunks) - 1
	for i := 1; i < last; i++ {
		if pos = g.chunks[i].floatEnd(s, pos); pos < 0 {
			return false
		}
	}
	return g.chunks[last].suffixMatch(s, pos)
}

// lastIndexSep is the index of the last separator in s, or -1.
func lastIndexSep(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if isSep(s[i]) {
			return i
		}
	}
	return -1
}
