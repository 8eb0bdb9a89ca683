package revocation

import (
	"cmp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// Limits on selectors, checked by ParseSelector.
const (
	MaxSelectorLen   = 4096 // bytes of a selector's text
	MaxSelectorTerms = 16   // terms of one selector
	MaxValueLen      = 1024 // bytes of one term's value (unquoted)
	MaxAttrNameLen   = 64   // bytes of the name after "attr."
	// MaxSubPrefixes bounds the "/"- and ":"-prefixes of a subject used as anchors. A
	// glob anchor keeps at most this many separators, so the two always meet.
	MaxSubPrefixes = 16
)

// Selector keys. A term's key is one of these or "attr." followed by an attribute
// name.
const (
	KeySubject     = "sub"
	KeyUpstream    = "upstream"
	KeyIssuer      = "iss"
	KeyTrustDomain = "trust_domain"
	KeyAudience    = "aud"
	KeyClientID    = "client_id"
	KeyJTI         = "jti"
	KeyBinding     = "bnd"
	// KeyKeyID is the kid of the JWS header of an issued token (Facts.KeyID): exact
	// values only, never on a block, and a revoke with a kid term ignores iat (see
	// the package documentation).
	KeyKeyID      = "kid"
	KeyAttrPrefix = "attr."
)

// anchorRank orders the keys by selectivity for indexing: an entry is filed under
// its exact term with the lowest rank. iss has no fact (the STS resolves it to
// upstream before storing) and never anchors. kid comes right after jti: a token
// has one kid and few entries ever name one.
func anchorRank(key string) int {
	switch key {
	case KeyJTI:
		return 0
	case KeyKeyID:
		return 1
	case KeySubject:
		return 2
	case KeyClientID:
		return 3
	case KeyBinding:
		return 4
	case KeyAudience:
		return 6
	case KeyUpstream:
		return 7
	case KeyTrustDomain:
		return 8
	}
	if strings.HasPrefix(key, KeyAttrPrefix) {
		return 5
	}
	return -1
}

// Selector is a parsed, validated selector: terms ANDed, each key at most once. The
// zero Selector has no terms and matches nothing. Selectors are immutable and safe
// for concurrent use.
type Selector struct {
	terms []term // sorted by key
}

type term struct {
	key   string
	value string
	glob  glob.Glob // compiled value; Literal() when the term is exact
}

func (t *term) exact() bool { return t.glob.Literal() }

// ParseSelector parses s (grammar in the package documentation). Errors wrap
// ErrInvalid. The text need not be canonical; String returns the canonical form.
func ParseSelector(s string) (Selector, error) {
	switch {
	case s == "":
		return Selector{}, invalid("empty selector")
	case len(s) > MaxSelectorLen:
		return Selector{}, invalid("selector longer than %d bytes", MaxSelectorLen)
	case !utf8.ValidString(s):
		return Selector{}, invalid("selector is not valid UTF-8")
	}
	var terms []term
	for i := 0; ; {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return Selector{}, invalid("term at offset %d has no '='", i)
		}
		key := s[i : i+eq]
		if err := checkKey(key); err != nil {
			return Selector{}, err
		}
		i += eq + 1
		var value string
		if i < len(s) && s[i] == '"' {
			v, n, err := unquote(s[i:])
			if err != nil {
				return Selector{}, err
			}
			value, i = v, i+n
			if i < len(s) && s[i] != ',' {
				return Selector{}, invalid("text after the quoted value of %s", key)
			}
		} else {
			end := strings.IndexByte(s[i:], ',')
			if end < 0 {
				end = len(s) - i
			}
			value, i = s[i:i+end], i+end
		}
		if err := checkValue(key, value); err != nil {
			return Selector{}, err
		}
		for _, t := range terms {
			if t.key == key {
				return Selector{}, invalid("key %s appears twice", key)
			}
		}
		if len(terms) == MaxSelectorTerms {
			return Selector{}, invalid("more than %d terms", MaxSelectorTerms)
		}
		terms = append(terms, term{key: key, value: value, glob: glob.Compile(value)})
		if i == len(s) {
			break
		}
		i++ // the ','
		if i == len(s) {
			return Selector{}, invalid("trailing ','")
		}
	}
	slices.SortFunc(terms, func(a, b term) int { return cmp.Compare(a.key, b.key) })
	sel := Selector{terms: terms}
	constrained := false
	for i := range terms {
		t := &terms[i]
		if t.exact() || t.key == KeySubject && subGlobAnchor(t.glob.Prefix()) != "" {
			constrained = true
		}
		if !t.exact() && t.key == KeyIssuer {
			return Selector{}, invalid("iss cannot be a glob (it is resolved to upstream)")
		}
		if !t.exact() && t.key == KeyKeyID {
			return Selector{}, invalid("kid cannot be a glob (it names one signing key)")
		}
	}
	if !constrained {
		return Selector{}, invalid("selector constrains nothing: it needs an exact term, or a sub glob whose literal prefix reaches a '/' or ':'")
	}
	return sel, nil
}

// MustParseSelector is ParseSelector for selectors fixed in code; it panics on error.
func MustParseSelector(s string) Selector {
	sel, err := ParseSelector(s)
	if err != nil {
		panic(err)
	}
	return sel
}

func checkKey(key string) error {
	switch key {
	case KeySubject, KeyUpstream, KeyIssuer, KeyTrustDomain, KeyAudience, KeyClientID, KeyJTI, KeyBinding, KeyKeyID:
		return nil
	}
	name, ok := strings.CutPrefix(key, KeyAttrPrefix)
	if !ok {
		if len(key) > 64 {
			key = key[:64] + "..."
		}
		return invalid("unknown key %q", key)
	}
	if err := checkAttrName(name); err != nil {
		return err
	}
	return nil
}

func checkAttrName(name string) error {
	if name == "" || len(name) > MaxAttrNameLen {
		return invalid("attribute name must have 1 to %d characters", MaxAttrNameLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return invalid("attribute name %q: only a-z, 0-9 and _ are allowed", name)
		}
	}
	return nil
}

// checkValue refuses empty and oversized values and control characters (quoted or
// not: no subject, audience or attribute the STS accepts carries one).
func checkValue(key, v string) error {
	switch {
	case v == "":
		return invalid("empty value for %s", key)
	case len(v) > MaxValueLen:
		return invalid("value of %s longer than %d bytes", key, MaxValueLen)
	case strings.ContainsFunc(v, unicode.IsControl):
		return invalid("value of %s contains a control character", key)
	}
	return nil
}

// unquote reads a quoted value at the start of s and returns it and the number of
// bytes consumed.
func unquote(s string) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, nil
		case '\\':
			if i+1 == len(s) || s[i+1] != '"' && s[i+1] != '\\' {
				return "", 0, invalid(`bad escape in quoted value (only \" and \\)`)
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, invalid("unterminated quoted value")
}

// needsQuotes reports whether v must be quoted to parse back to itself.
func needsQuotes(v string) bool {
	return strings.IndexByte(v, ',') >= 0 || strings.HasPrefix(v, `"`)
}

// String returns the canonical form: terms sorted by key, values quoted only when
// needed. ParseSelector(s.String()) gives a selector equal to s.
func (s Selector) String() string {
	var b strings.Builder
	for i, t := range s.terms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t.key)
		b.WriteByte('=')
		writeValue(&b, t.value)
	}
	return b.String()
}

func writeValue(b *strings.Builder, v string) {
	if !needsQuotes(v) {
		b.WriteString(v)
		return
	}
	b.WriteByte('"')
	for j := 0; j < len(v); j++ {
		if c := v[j]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[j])
	}
	b.WriteByte('"')
}

// IsZero reports whether s is the zero Selector (no terms).
func (s Selector) IsZero() bool { return len(s.terms) == 0 }

// Equal reports whether s and o have the same terms.
func (s Selector) Equal(o Selector) bool {
	return slices.EqualFunc(s.terms, o.terms, func(a, b term) bool { return a.key == b.key && a.value == b.value })
}

// Value returns the value of the term with key, and whether there is one.
func (s Selector) Value(key string) (string, bool) {
	for _, t := range s.terms {
		if t.key == key {
			return t.value, true
		}
	}
	return "", false
}

// CheckKind reports whether s may be the selector of an entry of kind k: it
// refuses (ErrInvalid) an unknown kind, and a block with a kid term, since kid
// applies to issued tokens, not to workloads (a workload asking for a token has no
// kid, so such a block would match nothing).
func (s Selector) CheckKind(k Kind) error {
	switch k {
	case KindRevoke:
		return nil
	case KindBlock:
		if _, ok := s.Value(KeyKeyID); ok {
			return invalid("a block cannot have a kid term: kid applies to issued tokens, not to workloads (revoke instead)")
		}
		return nil
	}
	return invalid("kind %q is not revoke or block", k)
}

// anyIssuedAt reports whether a revoke with s invalidates matching tokens whatever
// their iat: s has a kid term. A key that has been rotated out signs nothing new,
// and whoever holds a stolen key can put any iat in a token.
func (s Selector) anyIssuedAt() bool {
	_, ok := s.Value(KeyKeyID)
	return ok
}

// WithUpstream returns s with its iss term replaced by upstream=upstream: the STS
// resolves an issuer to the upstream configured for it before storing a selector
// (tokens carry upstream, not the upstream's issuer). It fails if s has no iss term
// or already names another upstream.
func (s Selector) WithUpstream(upstream string) (Selector, error) {
	if _, ok := s.Value(KeyIssuer); !ok {
		return Selector{}, invalid("selector has no iss term")
	}
	if err := checkValue(KeyUpstream, upstream); err != nil {
		return Selector{}, err
	}
	if strings.IndexByte(upstream, '*') >= 0 {
		return Selector{}, invalid("upstream name contains '*'")
	}
	if u, ok := s.Value(KeyUpstream); ok && u != upstream {
		return Selector{}, invalid("selector names upstream %q and an issuer of upstream %q", u, upstream)
	}
	terms := make([]term, 0, len(s.terms))
	for _, t := range s.terms {
		if t.key != KeyIssuer && t.key != KeyUpstream {
			terms = append(terms, t)
		}
	}
	terms = append(terms, term{key: KeyUpstream, value: upstream, glob: glob.Compile(upstream)})
	slices.SortFunc(terms, func(a, b term) int { return cmp.Compare(a.key, b.key) })
	return Selector{terms: terms}, nil
}

// Match reports whether a token or workload with facts f matches every term of s.
// A term on a fact that f lacks (empty, or an attribute not present) does not
// match, whatever its value; an iss term never matches (see WithUpstream). The zero
// Selector matches nothing. IssuedAt is not considered (see Entry.Invalidates,
// which compares it with the entry's Created unless the selector has a kid term).
func (s Selector) Match(f *Facts) bool {
	if f == nil || len(s.terms) == 0 {
		return false
	}
	for i := range s.terms {
		if !s.terms[i].match(f) {
			return false
		}
	}
	return true
}

func (t *term) match(f *Facts) bool {
	if t.key == KeyAudience {
		for _, a := range f.Audiences {
			if a != "" && t.glob.Match(a) {
				return true
			}
		}
		return false
	}
	v, ok := f.value(t.key)
	return ok && v != "" && t.glob.Match(v)
}

// Anchor returns the index bucket of s: its most selective exact term as
// "key=value" (jti > kid > sub > client_id > bnd > attr > aud > upstream >
// trust_domain), or, for a selector whose only anchorable term is a sub glob,
// "sub^P" where P is the glob's literal prefix cut after its last '/' or ':' (and
// after at most MaxSubPrefixes separators). A store reads, for a token, only the
// buckets named by Facts.Anchors; every selector that matches f has its Anchor
// among them. Anchor is "" only for a selector that cannot be stored (its only
// exact term is iss).
func (s Selector) Anchor() string {
	best := -1
	for i := range s.terms {
		t := &s.terms[i]
		r := anchorRank(t.key)
		if t.exact() && r >= 0 && (best < 0 || r < anchorRank(s.terms[best].key)) {
			best = i
		}
	}
	if best >= 0 {
		return s.terms[best].key + "=" + s.terms[best].value
	}
	if v, ok := s.Value(KeySubject); ok {
		g := glob.Compile(v)
		if p := subGlobAnchor(g.Prefix()); p != "" {
			return KeySubject + "^" + p
		}
	}
	return ""
}

// subGlobAnchor cuts prefix after its last '/' or ':' among the first
// MaxSubPrefixes separators; "" when it has none.
func subGlobAnchor(prefix string) string {
	end, n := 0, 0
	for i := 0; i < len(prefix) && n < MaxSubPrefixes; i++ {
		if prefix[i] == '/' || prefix[i] == ':' {
			end, n = i+1, n+1
		}
	}
	return prefix[:end]
}

// NewSelector builds a selector from key, value pairs, quoting values as needed. A
// value holding '*' is a glob, as in ParseSelector.
func NewSelector(keyValues ...string) (Selector, error) {
	if len(keyValues)%2 != 0 {
		return Selector{}, invalid("odd number of arguments to NewSelector")
	}
	var b strings.Builder
	for i := 0; i < len(keyValues); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(keyValues[i])
		b.WriteByte('=')
		writeValue(&b, keyValues[i+1])
	}
	return ParseSelector(b.String())
}
