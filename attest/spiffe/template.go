package spiffe

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/safeconduct/safeconduct/attest/attrs"
)

// reservedAttributes are set by the Verifier from what it verified itself; a path
// template cannot capture into them.
var reservedAttributes = []string{"sub", "iss", "path", "trust_domain"}

// maxTemplateSegments bounds a template (SPIFFE IDs are at most 2048 bytes).
const maxTemplateSegments = 64

// pathTemplate is a compiled Config.PathTemplates entry.
type pathTemplate struct {
	raw  string
	segs []templateSegment
}

// templateSegment is one segment of a template: a literal, "*" or a capture.
type templateSegment struct {
	literal string // matched exactly, when name is empty and !any
	name    string // capture: the attribute the segment is kept as
	any     bool   // "*": any one segment, not kept
}

// compileTemplate parses a path template such as "/ns/{namespace}/sa/{sa}".
func compileTemplate(t string) (pathTemplate, error) {
	pt := pathTemplate{raw: t}
	if !strings.HasPrefix(t, "/") {
		return pt, errors.New("must start with '/'")
	}
	parts := strings.Split(t[1:], "/")
	if len(parts) > maxTemplateSegments {
		return pt, fmt.Errorf("more than %d segments", maxTemplateSegments)
	}
	var names []string
	for i, part := range parts {
		switch {
		case part == "":
			return pt, fmt.Errorf("segment %d is empty", i+1)
		case part == "*":
			pt.segs = append(pt.segs, templateSegment{any: true})
		case strings.HasPrefix(part, "{") && strings.HasSuffix(part, "}"):
			name := part[1 : len(part)-1]
			switch {
			case !attrs.ValidName(name):
				return pt, fmt.Errorf("capture %q: invalid name (want [a-z][a-z0-9_]{0,63})", part)
			case slices.Contains(reservedAttributes, name):
				return pt, fmt.Errorf("capture %q: %q is reserved (%s are set by the verifier)", part, name, strings.Join(reservedAttributes, ", "))
			case slices.Contains(names, name):
				return pt, fmt.Errorf("capture %q appears twice", part)
			}
			names = append(names, name)
			pt.segs = append(pt.segs, templateSegment{name: name})
		default:
			if err := spiffeid.ValidatePathSegment(part); err != nil {
				return pt, fmt.Errorf("segment %q: %v", part, err)
			}
			pt.segs = append(pt.segs, templateSegment{literal: part})
		}
	}
	return pt, nil
}

// match reports whether path, the path of a SPIFFE ID ("/a/b"), has exactly the
// template's segments, and then (only then) writes the captures into dst.
func (t *pathTemplate) match(path string, dst map[string]string) bool {
	if !t.walk(path, nil) {
		return false
	}
	t.walk(path, dst)
	return true
}

// walk matches path segment by segment, writing captures into dst when not nil.
func (t *pathTemplate) walk(path string, dst map[string]string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	rest := path[1:]
	for i := range t.segs {
		seg := &t.segs[i]
		var cur string
		last := i == len(t.segs)-1
		j := strings.IndexByte(rest, '/')
		switch {
		case last && j >= 0, !last && j < 0:
			return false // more, or fewer, segments than the template
		case j < 0:
			cur, rest = rest, ""
		default:
			cur, rest = rest[:j], rest[j+1:]
		}
		if cur == "" {
			return false
		}
		switch {
		case seg.any:
		case seg.name != "":
			if dst != nil {
				dst[seg.name] = cur
			}
		case cur != seg.literal:
			return false
		}
	}
	return true
}
