package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// Limits on what a policy may be, so a bad or hostile file cannot exhaust memory.
const (
	// MaxFileSize is the largest policy file accepted, in bytes.
	MaxFileSize = 1 << 20
	// MaxRules is the largest number of rules in a policy, over all its files.
	MaxRules = 100_000
)

// Problem is one thing wrong with a policy, located in its source.
type Problem struct {
	// File is the file name given to Load or Parse; empty for problems that belong
	// to no file.
	File string
	// Line is 1-based; zero when the problem belongs to the whole file.
	Line int
	// Msg says what is wrong, without the location.
	Msg string
}

// String formats the problem as "file:line: msg", leaving out what is unknown.
func (p Problem) String() string {
	switch {
	case p.File == "":
		return p.Msg
	case p.Line <= 0:
		return p.File + ": " + p.Msg
	default:
		return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Msg
	}
}

// LoadError reports every problem found in a policy, in file then line order. It is
// the error Load, Parse, ParseFiles and ValidateUpstreams return for an invalid
// policy; find it with errors.As.
type LoadError struct {
	Problems []Problem
}

// Error prints one problem per line, as "file:line: msg".
func (e *LoadError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// File is a named policy document, for ParseFiles.
type File struct {
	// Name locates problems (usually the path the data was read from).
	Name string
	Data []byte
}

// Load reads the policy files, in order, and compiles them into one Policy. Rule
// names must be unique across all files. Every problem of every file is reported
// together in a *LoadError. Load does not know the configured upstreams: call
// ValidateUpstreams on the result.
func Load(files ...string) (*Policy, error) {
	c := newCompiler()
	if len(files) == 0 {
		c.problem("", 0, "no policy files given")
	}
	for _, name := range files {
		c.files = append(c.files, name)
		data, err := readFile(name)
		if err != nil {
			c.problem(name, 0, "%v", err)
			continue
		}
		c.file(name, data)
	}
	return c.finish()
}

// Parse compiles one policy document; name locates problems.
func Parse(name string, data []byte) (*Policy, error) {
	return ParseFiles(File{Name: name, Data: data})
}

// ParseFiles compiles several policy documents, in order, into one Policy, as Load
// does with files read from disk.
func ParseFiles(files ...File) (*Policy, error) {
	c := newCompiler()
	for _, f := range files {
		c.files = append(c.files, f.Name)
		c.file(f.Name, f.Data)
	}
	return c.finish()
}

// readFile reads at most MaxFileSize bytes, refusing anything larger.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", pathless(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", pathless(err))
	}
	if len(data) > MaxFileSize {
		return nil, errTooLarge
	}
	return data, nil
}

var errTooLarge = fmt.Errorf("file is larger than %d bytes", MaxFileSize)

// pathless drops the path from an *fs.PathError, which the Problem already names.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// compiler accumulates rules and problems over the files of one policy.
type compiler struct {
	files    []string
	rules    []*rule
	byName   map[string]*rule
	count    int // rule entries seen, valid or not
	tooMany  bool
	problems []Problem
	warnings []Problem
}

func newCompiler() *compiler {
	return &compiler{byName: make(map[string]*rule)}
}

func (c *compiler) problem(file string, line int, format string, args ...any) {
	c.problems = append(c.problems, Problem{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (c *compiler) finish() (*Policy, error) {
	if len(c.problems) > 0 {
		// Sort by file (in the order given) then line; keep discovery order within
		// a line.
		order := make(map[string]int, len(c.files))
		for i, f := range c.files {
			if _, ok := order[f]; !ok {
				order[f] = i
			}
		}
		slices.SortStableFunc(c.problems, func(a, b Problem) int {
			if d := order[a.File] - order[b.File]; d != 0 {
				return d
			}
			return a.Line - b.Line
		})
		return nil, &LoadError{Problems: c.problems}
	}
	return &Policy{rules: c.rules, index: buildIndex(c.rules), warnings: c.warnings}, nil
}

// yamlLine extracts the line from go-yaml's error text ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserErrors are the messages of go-yaml's parser (as opposed to its scanner).
// go-yaml v3 prints the 0-based line for these, and the 1-based one for scanner
// errors; TestParseErrors holds both to the right line.
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

func (c *compiler) yamlError(file string, err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	// go-yaml leaves the line out when it is the first one.
	line := 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if slices.Contains(yamlParserErrors, msg) {
			line++
		}
	}
	c.problem(file, line, "invalid YAML: %s", msg)
}

// file compiles one YAML document.
func (c *compiler) file(name string, data []byte) {
	if len(data) > MaxFileSize {
		c.problem(name, 0, "%v", errTooLarge)
		return
	}
	before := c.count
	// The document is decoded into a yaml.Node, never straight into Go structs, and
	// walked by hand: that is how every problem is found in one pass, each with its
	// line, and how unknown keys, duplicate keys, aliases and values of the wrong
	// type are all refused rather than coerced.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		// Empty, or only comments.
	case err != nil:
		c.yamlError(name, err)
		return
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			c.yamlError(name, err)
			return
		default:
			c.problem(name, extra.Line, "a policy file holds one YAML document; remove the extra \"---\"")
			return
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		c.top(name, root)
	}
	if c.count == before && !c.tooMany {
		c.warnings = append(c.warnings, Problem{File: name, Msg: "file defines no rules"})
	}
}

func (c *compiler) top(file string, n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, "YAML aliases are not supported")
		return
	}
	if n.Kind != yaml.MappingNode {
		c.problem(file, n.Line, "the top level must be a mapping with a \"rules\" key")
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := c.key(file, "", n.Content[i], seen)
		if !ok {
			continue
		}
		switch key {
		case "rules":
			c.ruleList(file, n.Content[i+1])
		default:
			c.problem(file, n.Content[i].Line, "unknown key %q (the only top-level key is \"rules\")", key)
		}
	}
}

// key checks a mapping key: a string, not seen before in this mapping.
func (c *compiler) key(file, ctx string, k *yaml.Node, seen map[string]int) (string, bool) {
	if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
		c.problem(file, k.Line, "%sYAML merge keys (<<) are not supported", ctx)
		return "", false
	}
	if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
		c.problem(file, k.Line, "%skeys must be plain strings", ctx)
		return "", false
	}
	if first, dup := seen[k.Value]; dup {
		c.problem(file, k.Line, "%sduplicate key %q (first at line %d)", ctx, k.Value, first)
		return "", false
	}
	seen[k.Value] = k.Line
	return k.Value, true
}

func (c *compiler) ruleList(file string, n *yaml.Node) {
	items, ok := c.list(file, "", "rules", n)
	if !ok {
		return
	}
	for i, item := range items {
		if c.count >= MaxRules {
			if !c.tooMany {
				c.tooMany = true
				c.problem(file, item.Line, "too many rules: a policy holds at most %d", MaxRules)
			}
			return
		}
		c.count++
		c.rule(file, i, item)
	}
}

// ruleKeys are the keys a rule may have. Anything else is an error: a misspelt key
// must not silently drop a restriction.
var ruleKeys = []string{"name", "effect", "upstreams", "subjects", "audiences", "scopes", "max_ttl"}

func (c *compiler) rule(file string, index int, n *yaml.Node) {
	ctx := fmt.Sprintf("rules[%d]: ", index)
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, "%sYAML aliases are not supported", ctx)
		return
	}
	if n.Kind != yaml.MappingNode {
		c.problem(file, n.Line, "%sa rule must be a mapping", ctx)
		return
	}
	// Problems are about `rule "name"` when the rule has a usable name.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "name" && k.ShortTag() == "!!str" && v.Kind == yaml.ScalarNode &&
			v.ShortTag() == "!!str" && checkToken(v.Value) == "" {
			ctx = fmt.Sprintf("rule %q: ", v.Value)
			break
		}
	}
	before := len(c.problems)
	fields := make(map[string]*yaml.Node, len(ruleKeys))
	seen := make(map[string]int, len(ruleKeys))
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := c.key(file, ctx, n.Content[i], seen)
		if !ok {
			continue
		}
		if !slices.Contains(ruleKeys, key) {
			c.problem(file, n.Content[i].Line, "%sunknown key %q (rule keys are %s)", ctx, key, strings.Join(ruleKeys, ", "))
			continue
		}
		fields[key] = n.Content[i+1]
	}

	r := &rule{file: file, line: n.Line}

	// The name is unique across all the files of the policy.
	if v, ok := fields["name"]; !ok {
		c.problem(file, n.Line, "%sname is required", ctx)
	} else if name, ok := c.str(file, ctx, "name", v); ok {
		if msg := checkToken(name); msg != "" {
			c.problem(file, v.Line, "%sname %s", ctx, msg)
		} else {
			r.name = name
			if first, dup := c.byName[name]; dup {
				c.problem(file, v.Line, "%sduplicate rule name (first defined at %s:%d)", ctx, first.file, first.line)
			} else {
				c.byName[name] = r
			}
		}
	}

	effectKnown := false
	if v, ok := fields["effect"]; !ok {
		c.problem(file, n.Line, "%seffect is required (allow or deny)", ctx)
	} else if effect, ok := c.str(file, ctx, "effect", v); ok {
		switch effect {
		case EffectAllow:
			effectKnown = true
		case EffectDeny:
			effectKnown = true
			r.deny = true
		default:
			c.problem(file, v.Line, "%seffect must be \"allow\" or \"deny\", not %q", ctx, effect)
		}
	}

	// Every rule, allow or deny, names its upstreams and subjects: a deny rule that
	// forgot them must not turn into "deny nothing" or "deny everyone" by accident.
	// (Each "at least one" complaint is left out when the list had bad entries,
	// which were already reported.)
	p := len(c.problems)
	r.upstream = c.stringList(file, ctx, "upstreams", fields, checkToken)
	if len(r.upstream) == 0 && len(c.problems) == p {
		c.problem(file, lineOf(fields["upstreams"], n), "%supstreams: at least one upstream is required", ctx)
	}
	p = len(c.problems)
	subjects := c.stringList(file, ctx, "subjects", fields, checkToken)
	if len(subjects) == 0 && len(c.problems) == p {
		c.problem(file, lineOf(fields["subjects"], n), "%ssubjects: at least one subject pattern is required", ctx)
	}
	for _, s := range subjects {
		r.subjects = append(r.subjects, glob.Compile(s.value))
	}

	// Audiences and scopes are exact values. '*' is refused in them so nobody
	// writes "*" believing it is a wildcard and grants a literal "*" audience.
	p = len(c.problems)
	for _, a := range c.stringList(file, ctx, "audiences", fields, checkExact) {
		r.audiences = append(r.audiences, a.value)
	}
	// An allow rule must say what it grants: an empty list never means "any".
	if effectKnown && !r.deny && len(r.audiences) == 0 && len(c.problems) == p {
		c.problem(file, lineOf(fields["audiences"], n), "%saudiences: an allow rule must grant at least one audience", ctx)
	}
	for _, s := range c.stringList(file, ctx, "scopes", fields, checkScope) {
		r.scopes = append(r.scopes, s.value)
	}

	if v, ok := fields["max_ttl"]; ok {
		// A bare number (max_ttl: 600) is read as text so the complaint is about
		// the missing unit, not about YAML types.
		s, ok := v.Value, v.Kind == yaml.ScalarNode && !isNull(v)
		if !ok {
			_, ok = c.str(file, ctx, "max_ttl", v)
		}
		if ok {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				c.problem(file, v.Line, "%smax_ttl: %q is not a duration (write e.g. 10m or 1h30m)", ctx, s)
			case d <= 0:
				c.problem(file, v.Line, "%smax_ttl must be positive", ctx)
			case effectKnown && r.deny:
				c.problem(file, v.Line, "%smax_ttl has no meaning on a deny rule", ctx)
			default:
				r.maxTTL = d
			}
		}
	}

	if len(c.problems) != before {
		return
	}
	r.audienceSet = newStringSet(r.audiences)
	r.scopeSet = newStringSet(r.scopes)
	r.allowReason = fmt.Sprintf("rule %q grants every requested target and scope", r.name)
	c.rules = append(c.rules, r)
}

func lineOf(v, parent *yaml.Node) int {
	if v != nil {
		return v.Line
	}
	return parent.Line
}

// stringList checks an optional list of strings under key, each with check (which
// returns a complaint or ""), refusing duplicates. It returns the valid values.
func (c *compiler) stringList(file, ctx, key string, fields map[string]*yaml.Node, check func(string) string) []located {
	v, ok := fields[key]
	if !ok {
		return nil
	}
	items, ok := c.list(file, ctx, key, v)
	if !ok {
		return nil
	}
	var out []located
	seen := make(map[string]int, len(items))
	for i, item := range items {
		what := fmt.Sprintf("%s[%d]", key, i)
		s, ok := c.str(file, ctx, what, item)
		if !ok {
			continue
		}
		if msg := check(s); msg != "" {
			c.problem(file, item.Line, "%s%s %s", ctx, what, msg)
			continue
		}
		if first, dup := seen[s]; dup {
			c.problem(file, item.Line, "%s%s: %q is listed twice (first at line %d)", ctx, what, s, first)
			continue
		}
		seen[s] = item.Line
		out = append(out, located{s, item.Line})
	}
	return out
}

// list checks that n is a sequence (or null, meaning empty) and returns its items.
func (c *compiler) list(file, ctx, what string, n *yaml.Node) ([]*yaml.Node, bool) {
	switch {
	case isNull(n):
		return nil, true
	case n.Kind == yaml.SequenceNode:
		return n.Content, true
	case n.Kind == yaml.AliasNode:
		c.problem(file, n.Line, "%s%s: YAML aliases are not supported", ctx, what)
	case n.Kind == yaml.ScalarNode:
		c.problem(file, n.Line, "%s%s must be a list (write [%s])", ctx, what, n.Value)
	default:
		c.problem(file, n.Line, "%s%s must be a list", ctx, what)
	}
	return nil, false
}

// str checks that n is a string scalar and returns it. Numbers, booleans and nulls
// are refused rather than converted: quote them.
func (c *compiler) str(file, ctx, what string, n *yaml.Node) (string, bool) {
	switch {
	case n.Kind == yaml.AliasNode:
		c.problem(file, n.Line, "%s%s: YAML aliases are not supported", ctx, what)
	case n.Kind != yaml.ScalarNode:
		c.problem(file, n.Line, "%s%s must be a string", ctx, what)
	case isNull(n):
		c.problem(file, n.Line, "%s%s has no value", ctx, what)
	case n.ShortTag() != "!!str":
		c.problem(file, n.Line, "%s%s must be a string, not %s (quote it)", ctx, what, strings.TrimPrefix(n.ShortTag(), "!!"))
	default:
		return n.Value, true
	}
	return "", false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// checkToken is the rule for names, upstreams and subject patterns: non-empty
// printable text without whitespace. Invisible and bidirectional-control
// characters are refused too, so what a reviewer reads is what is matched.
func checkToken(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if r == ' ' || !unicode.IsPrint(r) {
			return "must not contain whitespace or control characters"
		}
	}
	return ""
}

// checkExact is checkToken for audiences, which are matched exactly.
func checkExact(s string) string {
	if msg := checkToken(s); msg != "" {
		return msg
	}
	if strings.Contains(s, "*") {
		return "must not contain '*': audiences are matched exactly, there are no wildcards"
	}
	return ""
}

// checkScope follows RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ),
// and refuses '*' as checkExact does.
func checkScope(s string) string {
	if s == "" {
		return "must not be empty"
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b < 0x21 || b > 0x7e || b == '"' || b == '\\' {
			return "must be printable ASCII without spaces, '\"' or '\\' (RFC 6749 scope-token)"
		}
	}
	if strings.Contains(s, "*") {
		return "must not contain '*': scopes are matched exactly, there are no wildcards"
	}
	return ""
}
