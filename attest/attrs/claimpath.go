package attrs

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds of a ClaimPath.
const (
	// MaxClaimPathLength is the longest claim path accepted, in bytes.
	MaxClaimPathLength = 256
	// MaxClaimPathDepth is the most reference tokens of a JSON Pointer claim path.
	MaxClaimPathDepth = 8
)

// ClaimPath names a claim: a top-level claim name ("repository_owner"), or, when
// it starts with '/', an RFC 6901 JSON Pointer into nested claims
// ("/kubernetes.io/namespace"; '~1' stands for '/' and '~0' for '~' within a
// name). Top-level names may contain any byte, dots included: "kubernetes.io" is
// one claim, not a path. A pointer walks JSON objects only (an array index is not
// a claim path). The zero ClaimPath names nothing.
type ClaimPath struct {
	raw    string
	tokens []string
}

// ParseClaimPath parses a claim path, for configuration (required_claims): an
// empty name, a pointer with a bad escape, and paths longer than
// MaxClaimPathLength or deeper than MaxClaimPathDepth are errors.
func ParseClaimPath(s string) (ClaimPath, error) {
	switch {
	case s == "":
		return ClaimPath{}, errors.New("empty claim name")
	case len(s) > MaxClaimPathLength:
		return ClaimPath{}, fmt.Errorf("claim path of %d bytes, at most %d", len(s), MaxClaimPathLength)
	case s[0] != '/':
		return ClaimPath{raw: s, tokens: []string{s}}, nil
	}
	parts := strings.Split(s[1:], "/")
	if len(parts) > MaxClaimPathDepth {
		return ClaimPath{}, fmt.Errorf("claim path %q has %d levels, at most %d", s, len(parts), MaxClaimPathDepth)
	}
	for i, p := range parts {
		t, err := unescapeToken(p)
		if err != nil {
			return ClaimPath{}, fmt.Errorf("claim path %q: %v", s, err)
		}
		parts[i] = t
	}
	return ClaimPath{raw: s, tokens: parts}, nil
}

// unescapeToken decodes one RFC 6901 reference token: "~1" is '/', "~0" is '~',
// and any other '~' is an error.
func unescapeToken(t string) (string, error) {
	if !strings.Contains(t, "~") {
		return t, nil
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		if t[i] != '~' {
			b.WriteByte(t[i])
			continue
		}
		if i+1 == len(t) || (t[i+1] != '0' && t[i+1] != '1') {
			return "", errors.New("'~' must be followed by 0 or 1 (RFC 6901)")
		}
		if t[i+1] == '0' {
			b.WriteByte('~')
		} else {
			b.WriteByte('/')
		}
		i++
	}
	return b.String(), nil
}

// String is the path as written.
func (p ClaimPath) String() string { return p.raw }

// Lookup returns the value at the path in claims and whether it is there: every
// level but the last must be a JSON object.
func (p ClaimPath) Lookup(claims map[string]any) (any, bool) {
	if len(p.tokens) == 0 {
		return nil, false
	}
	cur := claims
	for i, t := range p.tokens {
		v, ok := cur[t]
		if !ok {
			return nil, false
		}
		if i == len(p.tokens)-1 {
			return v, true
		}
		if cur, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}
