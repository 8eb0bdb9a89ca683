// Package strictjson decodes untrusted JSON objects the way a security check needs
// them decoded: exactly one object, valid UTF-8, bounded nesting, and no member name
// repeated within any object.
//
// encoding/json silently keeps the last of two equal member names, while other
// parsers keep the first: a token carrying {"iss":"a","iss":"b"} could be routed by
// one value and checked against the other. Refusing duplicates removes that parser
// differential. Names are compared exactly (case-sensitively, after unescaping), as
// JOSE and JWT do.
//
// How: encoding/json parses and validates (so there is no second JSON grammar to get
// wrong); a single allocation-free pass over the bytes bounds the nesting and counts
// the member names; a duplicate is present exactly when the decoded maps hold fewer
// keys than that count. This costs about a third of a json.Decoder token walk, which
// matters on the token hot path. The tests hold it to a json.Decoder-based reference.
package strictjson

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Errors returned by DecodeObject, besides syntax errors from encoding/json.
var (
	// ErrDuplicateKey: an object repeats a member name.
	ErrDuplicateKey = errors.New("strictjson: duplicate member name")
	// ErrTooDeep: objects and arrays nest deeper than allowed.
	ErrTooDeep = errors.New("strictjson: nesting too deep")
	// ErrNotObject: the input is not exactly one JSON object.
	ErrNotObject = errors.New("strictjson: not a single JSON object")
	// ErrInvalidUTF8: the input is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("strictjson: invalid UTF-8")
)

// DecodeObject decodes data, which must hold exactly one JSON object (surrounding
// whitespace allowed), into a map with the types encoding/json uses for `any`
// (string, float64, bool, nil, []any, map[string]any). It refuses invalid UTF-8,
// nesting deeper than maxDepth (the top-level object is depth 1) and any object that
// repeats a member name, at every depth. On success the result is what json.Unmarshal
// into a map[string]any returns.
func DecodeObject(data []byte, maxDepth int) (map[string]any, error) {
	if !utf8.Valid(data) {
		return nil, ErrInvalidUTF8
	}
	names, err := scan(data, maxDepth)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotObject, err)
	}
	if m == nil { // cannot happen: scan saw '{' first and Unmarshal accepted
		return nil, ErrNotObject
	}
	if countKeys(m) != names {
		return nil, ErrDuplicateKey
	}
	return m, nil
}

// CheckObject is DecodeObject for callers that only need the verdict.
func CheckObject(data []byte, maxDepth int) error {
	_, err := DecodeObject(data, maxDepth)
	return err
}

// scan checks that data starts with '{', bounds its nesting and counts member names:
// strings followed by ':'. The count is exact for valid JSON; for invalid JSON it
// does not matter, as encoding/json refuses it afterwards.
func scan(data []byte, maxDepth int) (names int, err error) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		return 0, ErrNotObject
	}
	depth := 0
	for ; i < len(data); i++ {
		switch data[i] {
		case '{', '[':
			if depth++; depth > maxDepth {
				return 0, ErrTooDeep
			}
		case '}', ']':
			depth--
		case '"':
			i++
			for i < len(data) && data[i] != '"' {
				if data[i] == '\\' {
					i++ // the escaped byte cannot end the string
				}
				i++
			}
			// i is at the closing quote (or past the end of invalid input).
			if j := skipSpace(data, i+1); j < len(data) && data[j] == ':' {
				names++
			}
		}
	}
	return names, nil
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// countKeys counts the members of every object in v.
func countKeys(v any) int {
	switch v := v.(type) {
	case map[string]any:
		n := len(v)
		for _, e := range v {
			n += countKeys(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += countKeys(e)
		}
		return n
	}
	return 0
}
