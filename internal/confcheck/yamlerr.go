package confcheck

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// yamlLine extracts the line from go-yaml's error text ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserErrors are the messages of go-yaml's parser (as opposed to its
// scanner). go-yaml v3 prints the 0-based line for these, and the 1-based one for
// scanner errors.
var yamlParserErrors = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// Syntax is the problem of a file go-yaml could not parse, err being what
// yaml.Unmarshal or a yaml.Decoder returned, at the line it names (go-yaml leaves
// the line out when it is the first).
func Syntax(file string, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if slices.Contains(yamlParserErrors, msg) {
			line++
		}
	}
	return Problem{File: file, Line: line, Message: "invalid YAML: " + msg}
}

// verbs start the rest of a message that names its key first ("x must be ...").
var verbs = []string{"must ", "is ", "are ", "needs ", "does ", "applies ", "has ", "cannot ", `"`}

// StripKey drops, from the start of msg, the key that path already names, so a
// message written to stand alone ("tracing.timeout must be positive", reported at
// tracing.timeout) does not repeat it: "must be positive". The key is matched as
// any trailing part of path ("timeout", "tracing.timeout"), with or without a
// trailing list index, followed by ": " or by a verb.
func StripKey(path, msg string) string {
	for p := path; p != ""; {
		unindexed := p
		if i := strings.LastIndexByte(p, '['); i > 0 && strings.HasSuffix(p, "]") {
			unindexed = p[:i]
		}
		for _, k := range []string{p, unindexed} {
			if rest, ok := strings.CutPrefix(msg, k+": "); ok {
				return rest
			}
			if rest, ok := strings.CutPrefix(msg, k+" "); ok && slices.ContainsFunc(verbs, func(v string) bool { return strings.HasPrefix(rest, v) }) {
				return rest
			}
		}
		_, p, _ = strings.Cut(p, ".")
	}
	return msg
}
