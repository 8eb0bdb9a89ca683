package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/internal/confcheck"
	"github.com/safeconduct/safeconduct/internal/glob"
)

// Limits on what a policy may be, so a bad or hostile file cannot exhaust memory.
const (
	// MaxFileSize is the largest policy file accepted, in bytes.
	MaxFileSize = 1 << 20
	// MaxRules is the largest number of rules in a policy, over all its files.
	MaxRules = 100_000
)

// Problem is one thing wrong with a policy, located in its source: File (empty
// for problems that belong to no file), Line (zero for the whole file), the key
// Path ("rules[2].subjects[0]") and the Message. Its String method formats it as
// "file:line: path: message", leaving out what is unknown.
type Problem = confcheck.Problem

// LoadError reports every problem found in a policy, in file then line order. It is
// the error Load, Parse, ParseFiles and ValidateUpstreams return for an invalid
// policy; find it with errors.As.
type LoadError struct {
	Problems []Problem
}

// Error prints one problem per line, as "file:line: path: message".
func (e *LoadError) Error() string { return confcheck.Format(e.Problems) }

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
		c.problem("", 0, "", "no policy files given")
	}
	for _, name := range files {
		c.files = append(c.files, name)
		data, err := readFile(name)
		if err != nil {
			c.problem(name, 0, "", "%v", err)
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
	files     []string
	rules     []*rule
	admin     []*adminRule
	sensitive []glob.Glob
	// byName holds the first definition of each rule and admin rule name: names
	// are unique across both lists and every file.
	byName   map[string]located
	count    int // rule and admin entries seen, valid or not
	tooMany  bool
	problems []Problem
	warnings []Problem
	// programs caches compiled conditions by environment and source, so a
	// condition repeated over many rules is compiled once.
	programs map[programKey]compiled
	// digests are the SHA-256 of each file compiled, in order.
	digests []FileDigest
	// mode is the glob semantics of the file being compiled (its `version`).
	mode glob.Mode
	// crossing counts, per file, the Legacy patterns whose '*' may cross a
	// separator (one warning per file names the first few).
	crossing map[string]*crossingPatterns
}

// crossingPatterns are the patterns of one version 1 file whose '*' may match ':'
// or '/'.
type crossingPatterns struct {
	n     int
	first []string // "line N: pattern", up to maxCrossingListed
}

const maxCrossingListed = 5

type programKey struct {
	admin bool
	src   string
}

func newCompiler() *compiler {
	return &compiler{byName: make(map[string]located), programs: make(map[programKey]compiled), crossing: make(map[string]*crossingPatterns)}
}

// problem records a problem at line of file, about the value at path.
func (c *compiler) problem(file string, line int, path, format string, args ...any) {
	c.problems = append(c.problems, Problem{File: file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *compiler) finish() (*Policy, error) {
	if len(c.problems) > 0 {
		confcheck.Sort(c.problems, c.files...)
		return nil, &LoadError{Problems: c.problems}
	}
	for i, r := range c.rules {
		r.ord = i
	}
	p := &Policy{
		files:      c.files,
		rules:      c.rules,
		index:      buildIndex(c.rules),
		admin:      c.admin,
		adminIndex: make(map[string][]*adminRule),
		sensitive:  c.sensitive,
		warnings:   c.warnings,
		digests:    c.digests,
	}
	for _, r := range c.admin {
		for _, u := range r.upstream {
			p.adminIndex[u.value] = append(p.adminIndex[u.value], r)
		}
	}
	return p, nil
}

// file compiles one YAML document.
func (c *compiler) file(name string, data []byte) {
	if len(data) > MaxFileSize {
		c.problem(name, 0, "", "%v", errTooLarge)
		return
	}
	before, sensitive := c.count, len(c.sensitive)
	c.mode = glob.Legacy
	sum := sha256.Sum256(data)
	c.digests = append(c.digests, FileDigest{Name: name, SHA256: hex.EncodeToString(sum[:])})
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
		c.problems = append(c.problems, confcheck.Syntax(name, err))
		return
	default:
		var extra yaml.Node
		switch err := dec.Decode(&extra); {
		case errors.Is(err, io.EOF):
		case err != nil:
			c.problems = append(c.problems, confcheck.Syntax(name, err))
			return
		default:
			c.problem(name, extra.Line, "", "a policy file holds one YAML document; remove the extra \"---\"")
			return
		}
		root := &doc
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		c.top(name, root)
	}
	if c.count == before && len(c.sensitive) == sensitive && !c.tooMany {
		c.warnings = append(c.warnings, Problem{File: name, Message: "file defines no rules"})
	}
	if x := c.crossing[name]; x != nil {
		more := ""
		if x.n > len(x.first) {
			more = fmt.Sprintf(", and %d more", x.n-len(x.first))
		}
		c.warnings = append(c.warnings, Problem{File: name, Path: "version", Message: fmt.Sprintf(
			"%d pattern(s) use '*', which in a file without `version: %d` also matches ':' and '/' (\"repo:acme/*\" matches \"repo:acme/app:pull_request\"): %s%s; "+
				"add `version: %d` and write '**' where a pattern should cross segments (see the policy docs)",
			x.n, VersionSegments, strings.Join(x.first, "; "), more, VersionSegments)})
	}
}

// Policy file versions (the top-level `version` key).
const (
	// VersionLegacy (the default when the key is absent): '*' in a pattern
	// matches any run of characters, ':' and '/' included.
	VersionLegacy = 1
	// VersionSegments: '*' matches within one segment (no ':' or '/'), '**'
	// across segments.
	VersionSegments = 2
)

// version reads the top-level `version` key of a file, before anything else is
// compiled, and sets the glob semantics of its patterns.
func (c *compiler) version(file string, n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind != yaml.ScalarNode || k.Value != "version" {
			continue
		}
		v := n.Content[i+1]
		switch {
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int" && v.Value == "1":
			c.mode = glob.Legacy
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int" && v.Value == "2":
			c.mode = glob.Segments
		default:
			c.problem(file, v.Line, "version", "must be %d or %d (a number; %d is the default)", VersionLegacy, VersionSegments, VersionLegacy)
		}
		return
	}
}

// glob compiles a pattern of the current file, noting Legacy patterns whose '*'
// may cross a separator.
func (c *compiler) glob(file string, line int, pattern string) glob.Glob {
	g := glob.CompileMode(pattern, c.mode)
	if g.CrossesSegments() {
		x := c.crossing[file]
		if x == nil {
			x = &crossingPatterns{}
			c.crossing[file] = x
		}
		x.n++
		if len(x.first) < maxCrossingListed {
			x.first = append(x.first, fmt.Sprintf("line %d: %q", line, pattern))
		}
	}
	return g
}

// topKeys are the keys of a policy file.
var topKeys = []string{"version", "rules", "admin", "sensitive_audiences"}

func (c *compiler) top(file string, n *yaml.Node) {
	if isNull(n) {
		return
	}
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, "", "YAML aliases are not supported")
		return
	}
	if n.Kind != yaml.MappingNode {
		c.problem(file, n.Line, "", "the top level must be a mapping with a \"rules\" key")
		return
	}
	c.version(file, n)
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := c.key(file, "", n.Content[i], seen)
		if !ok {
			continue
		}
		switch key {
		case "version":
			// read first, by c.version
		case "rules":
			c.entries(file, "rules", n.Content[i+1], c.rule)
		case "admin":
			c.entries(file, "admin", n.Content[i+1], c.adminRule)
		case "sensitive_audiences":
			top := &entry{file: file, node: n, fields: map[string]*yaml.Node{key: n.Content[i+1]}}
			p := len(c.problems)
			list := c.stringList(top, key, checkToken)
			if len(list) == 0 && len(c.problems) == p {
				c.problem(file, n.Content[i+1].Line, key, "at least one pattern is required (leave the key out instead)")
			}
			for _, s := range list {
				c.sensitive = append(c.sensitive, glob.Compile(s.value))
			}
		default:
			c.problem(file, n.Content[i].Line, confcheck.Key("", key), "%s", confcheck.UnknownKey(key, topKeys))
		}
	}
}

// key checks a key of the mapping at path: a string, not seen before in this
// mapping.
func (c *compiler) key(file, path string, k *yaml.Node, seen map[string]int) (string, bool) {
	if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
		c.problem(file, k.Line, path, "YAML merge keys (<<) are not supported")
		return "", false
	}
	if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
		c.problem(file, k.Line, path, "keys must be plain strings")
		return "", false
	}
	if first, dup := seen[k.Value]; dup {
		c.problem(file, k.Line, confcheck.Key(path, k.Value), "duplicate key (first at line %d)", first)
		return "", false
	}
	seen[k.Value] = k.Line
	return k.Value, true
}

// entries compiles the list under a top-level key, one entry at a time.
func (c *compiler) entries(file, what string, n *yaml.Node, compile func(file string, index int, n *yaml.Node)) {
	items, ok := c.list(file, what, n)
	if !ok {
		return
	}
	for i, item := range items {
		if c.count >= MaxRules {
			if !c.tooMany {
				c.tooMany = true
				c.problem(file, item.Line, what, "too many rules: a policy holds at most %d", MaxRules)
			}
			return
		}
		c.count++
		compile(file, i, item)
	}
}

// entry is one rule or admin rule mapping being compiled.
type entry struct {
	file string
	node *yaml.Node
	// path is the entry's key path ("rules[3]").
	path string
	// fields are the values of the known keys, keyLine the lines of the keys.
	fields  map[string]*yaml.Node
	keyLine map[string]int
}

// open checks that n is a mapping of known keys and returns its entry; kind names
// the list ("rules" or "admin") and noun the entry ("rule" or "admin rule").
func (c *compiler) open(file, kind, noun string, index int, n *yaml.Node, keys []string) (*entry, bool) {
	e := &entry{file: file, node: n, path: confcheck.Index(kind, index)}
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, e.path, "YAML aliases are not supported")
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		article := "a"
		if strings.HasPrefix(noun, "a") {
			article = "an"
		}
		c.problem(file, n.Line, e.path, "%s %s must be a mapping", article, noun)
		return nil, false
	}
	c.fields(e, keys)
	return e, true
}

// fields reads the keys of e's mapping, which must be among keys.
func (c *compiler) fields(e *entry, keys []string) {
	e.fields = make(map[string]*yaml.Node, len(keys))
	e.keyLine = make(map[string]int, len(keys))
	seen := make(map[string]int, len(keys))
	n := e.node
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := c.key(e.file, e.path, n.Content[i], seen)
		if !ok {
			continue
		}
		if !slices.Contains(keys, key) {
			c.problem(e.file, n.Content[i].Line, confcheck.Key(e.path, key), "%s", confcheck.UnknownKey(key, keys))
			continue
		}
		e.fields[key] = n.Content[i+1]
		e.keyLine[key] = n.Content[i].Line
	}
}

// at is the path of key in e.
func (e *entry) at(key string) string { return confcheck.Key(e.path, key) }

// line is the line of key's value, or of the entry when the key is absent.
func (e *entry) line(key string) int {
	return lineOf(e.fields[key], e.node)
}

// name checks the required, unique name.
func (c *compiler) name(e *entry, noun string) string {
	v, ok := e.fields["name"]
	if !ok {
		c.problem(e.file, e.node.Line, e.at("name"), "is required")
		return ""
	}
	name, ok := c.str(e.file, e.at("name"), v)
	if !ok {
		return ""
	}
	if msg := checkToken(name); msg != "" {
		c.problem(e.file, v.Line, e.at("name"), "%s", msg)
		return ""
	}
	if first, dup := c.byName[name]; dup {
		c.problem(e.file, v.Line, e.at("name"), "duplicate %s name %q (first defined at %s:%d)", noun, name, first.value, first.line)
	} else {
		c.byName[name] = located{value: e.file, line: e.node.Line}
	}
	return name
}

// matcher compiles the keys rules and admin rules share: lifecycle, upstreams,
// subjects, trust_domains, attributes and when.
func (c *compiler) matcher(e *entry, admin bool) matcher {
	m := matcher{path: e.path}
	if v, ok := e.fields["owner"]; ok {
		if s, ok := c.str(e.file, e.at("owner"), v); ok {
			if msg := checkText(s); msg != "" {
				c.problem(e.file, v.Line, e.at("owner"), "%s", msg)
			} else {
				m.owner = s
			}
		}
	}
	if v, ok := e.fields["expires"]; ok {
		m.expires, _ = c.date(e.file, e.at("expires"), v)
	}
	if v, ok := e.fields["review_by"]; ok {
		m.reviewBy, _ = c.date(e.file, e.at("review_by"), v)
	}

	// Every rule, allow or deny, names its upstreams and subjects: a deny rule that
	// forgot them must not turn into "deny nothing" or "deny everyone" by accident.
	// (Each "at least one" complaint is left out when the list had bad entries,
	// which were already reported.)
	m.upstream, m.subjects = c.upstreamsAndSubjects(e)

	// An empty list or mapping never means "any": the key is left out instead.
	p := len(c.problems)
	for _, td := range c.stringList(e, "trust_domains", checkToken) {
		m.trustDomains = append(m.trustDomains, td.value)
	}
	if _, ok := e.fields["trust_domains"]; ok && len(m.trustDomains) == 0 && len(c.problems) == p {
		c.problem(e.file, e.line("trust_domains"), e.at("trust_domains"), "at least one trust domain is required (leave the key out instead)")
	}
	if v, ok := e.fields["attributes"]; ok {
		m.attributes = c.attributes(e.file, e.at("attributes"), v)
	}
	if v, ok := e.fields["when"]; ok {
		m.when = c.when(e, v, admin)
	}
	return m
}

// upstreamsAndSubjects compiles the required upstreams and subjects of a rule,
// admin rule or actor.
func (c *compiler) upstreamsAndSubjects(e *entry) ([]located, []glob.Glob) {
	p := len(c.problems)
	upstreams := c.stringList(e, "upstreams", checkToken)
	if len(upstreams) == 0 && len(c.problems) == p {
		c.problem(e.file, e.line("upstreams"), e.at("upstreams"), "at least one upstream is required")
	}
	p = len(c.problems)
	subjects := c.stringList(e, "subjects", checkToken)
	if len(subjects) == 0 && len(c.problems) == p {
		c.problem(e.file, e.line("subjects"), e.at("subjects"), "at least one subject pattern is required")
	}
	var globs []glob.Glob
	for _, s := range subjects {
		globs = append(globs, c.glob(e.file, s.line, s.value))
	}
	return upstreams, globs
}

// attributes compiles a mapping of attribute names to value patterns.
func (c *compiler) attributes(file, path string, n *yaml.Node) []attrMatch {
	switch {
	case n.Kind == yaml.AliasNode:
		c.problem(file, n.Line, path, "YAML aliases are not supported")
		return nil
	case n.Kind != yaml.MappingNode:
		c.problem(file, n.Line, path, "must be a mapping of attribute names to patterns (write {name: pattern})")
		return nil
	case len(n.Content) == 0:
		c.problem(file, n.Line, path, "at least one attribute is required (leave the key out instead)")
		return nil
	}
	var out []attrMatch
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, ok := c.key(file, path, n.Content[i], seen)
		if !ok {
			continue
		}
		at := confcheck.Key(path, name)
		if msg := checkToken(name); msg != "" {
			c.problem(file, n.Content[i].Line, at, "attribute name %s", msg)
			continue
		}
		pattern, ok := c.str(file, at, n.Content[i+1])
		if !ok {
			continue
		}
		if msg := checkText(pattern); msg != "" {
			c.problem(file, n.Content[i+1].Line, at, "%s", msg)
			continue
		}
		out = append(out, attrMatch{name: name, pattern: c.glob(file, n.Content[i+1].Line, pattern)})
	}
	return out
}

// when compiles a condition in the environment of rules or of admin rules. CEL
// problems are located at the line of the `when` key, with the position inside
// the expression.
func (c *compiler) when(e *entry, v *yaml.Node, admin bool) *condition {
	src, ok := c.str(e.file, e.at("when"), v)
	if !ok {
		return nil
	}
	line := e.keyLine["when"]
	key := programKey{admin: admin, src: src}
	prg, ok := c.programs[key]
	if !ok {
		env, err := ruleEnv()
		if admin {
			env, err = adminEnv()
		}
		if err != nil {
			c.problem(e.file, line, e.at("when"), "cannot build the condition environment: %v", err)
			return nil
		}
		var problems []celProblem
		prg, problems = compileCondition(env, src)
		if len(problems) > 0 {
			multiline := strings.Contains(strings.TrimRight(src, "\n"), "\n")
			for _, p := range problems {
				where := ""
				switch {
				case p.line > 0 && multiline:
					where = fmt.Sprintf(" (condition line %d, column %d)", p.line, p.column)
				case p.line > 0:
					where = fmt.Sprintf(" (column %d)", p.column)
				}
				c.problem(e.file, line, e.at("when"), "%s%s", oneLine(p.msg), where)
			}
			return nil
		}
		c.programs[key] = prg
	}
	cond := &condition{src: src, line: line, prg: prg.prg}
	if !admin {
		cond.terms = prg.terms
	}
	return cond
}

// ruleKeys are the keys a rule may have. Anything else is an error: a misspelt key
// must not silently drop a restriction.
var ruleKeys = []string{
	"name", "effect", "mode", "owner", "expires", "review_by",
	"upstreams", "subjects", "trust_domains", "attributes", "when",
	"actors", "max_delegation_depth",
	"audiences", "resources", "scopes", "max_ttl", "copy_attributes", "require_sender_constraint",
	"clients",
}

// onAllowOnly are the rule keys that mean nothing on a deny rule.
var onAllowOnly = []string{"max_ttl", "copy_attributes", "require_sender_constraint", "max_delegation_depth", "clients"}

func (c *compiler) rule(file string, index int, n *yaml.Node) {
	e, ok := c.open(file, "rules", "rule", index, n, ruleKeys)
	if !ok {
		return
	}
	before := len(c.problems)
	r := &rule{file: file, line: n.Line}
	r.name = c.name(e, "rule")

	effectKnown := false
	if v, ok := e.fields["effect"]; !ok {
		c.problem(file, n.Line, e.at("effect"), "is required (allow or deny)")
	} else if effect, ok := c.str(file, e.at("effect"), v); ok {
		switch effect {
		case EffectAllow:
			effectKnown = true
		case EffectDeny:
			effectKnown = true
			r.deny = true
		default:
			c.problem(file, v.Line, e.at("effect"), "must be \"allow\" or \"deny\", not %q", effect)
		}
	}
	if v, ok := e.fields["mode"]; ok {
		if mode, ok := c.str(file, e.at("mode"), v); ok {
			switch mode {
			case ModeEnforce:
			case ModeAudit:
				r.audit = true
			default:
				c.problem(file, v.Line, e.at("mode"), "must be %q or %q, not %q", ModeEnforce, ModeAudit, mode)
			}
		}
	}

	r.matcher = c.matcher(e, false)

	if v, ok := e.fields["actors"]; ok {
		r.actors = c.actors(file, e.at("actors"), v)
	}

	// Audiences, resources and scopes are exact values. '*' is refused in them so
	// nobody writes "*" believing it is a wildcard and grants a literal "*".
	p := len(c.problems)
	for _, a := range c.stringList(e, "audiences", checkExact) {
		r.audiences = append(r.audiences, a.value)
	}
	audProblems := len(c.problems) != p
	p = len(c.problems)
	_, r.hasResources = e.fields["resources"]
	for _, x := range c.stringList(e, "resources", checkResource) {
		r.resources = append(r.resources, x.value)
	}
	if r.hasResources && len(r.resources) == 0 && len(c.problems) == p {
		c.problem(file, e.line("resources"), e.at("resources"), "at least one resource is required (leave the key out instead)")
	}
	// An allow rule must say what it grants: an empty list never means "any".
	if effectKnown && !r.deny && len(r.audiences) == 0 && !audProblems {
		_, written := e.fields["audiences"]
		switch {
		case !r.hasResources:
			c.problem(file, e.line("audiences"), e.at("audiences"), "an allow rule must grant at least one audience")
		case written:
			c.problem(file, e.line("audiences"), e.at("audiences"), "must not be empty (leave the key out to grant resources only)")
		}
	}
	for _, s := range c.stringList(e, "scopes", checkScope) {
		r.scopes = append(r.scopes, s.value)
	}

	if v, ok := e.fields["max_ttl"]; ok {
		// A bare number (max_ttl: 600) is read as text so the complaint is about
		// the missing unit, not about YAML types.
		s, ok := v.Value, v.Kind == yaml.ScalarNode && !isNull(v)
		if !ok {
			_, ok = c.str(file, e.at("max_ttl"), v)
		}
		if ok {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				c.problem(file, v.Line, e.at("max_ttl"), "%q is not a duration (write e.g. 10m or 1h30m)", s)
			case d <= 0:
				c.problem(file, v.Line, e.at("max_ttl"), "must be positive")
			default:
				r.maxTTL = d
			}
		}
	}
	p = len(c.problems)
	for _, a := range c.stringList(e, "copy_attributes", checkToken) {
		r.copyAttributes = append(r.copyAttributes, a.value)
	}
	if _, ok := e.fields["copy_attributes"]; ok && len(r.copyAttributes) == 0 && len(c.problems) == p {
		c.problem(file, e.line("copy_attributes"), e.at("copy_attributes"), "at least one attribute is required (leave the key out instead)")
	}
	p = len(c.problems)
	for _, x := range c.stringList(e, "clients", checkToken) {
		r.clients = append(r.clients, c.glob(file, x.line, x.value))
	}
	if _, ok := e.fields["clients"]; ok && len(r.clients) == 0 && len(c.problems) == p {
		c.problem(file, e.line("clients"), e.at("clients"), "at least one client pattern is required (leave the key out instead)")
	}
	if v, ok := e.fields["require_sender_constraint"]; ok {
		r.requireSender, _ = c.boolean(file, e.at("require_sender_constraint"), v)
	}
	if v, ok := e.fields["max_delegation_depth"]; ok {
		// Both problems are reported: fixing one must not reveal the other.
		d, ok := c.integer(file, e.at("max_delegation_depth"), v)
		if ok && (d < 1 || d > MaxDelegationDepth) {
			c.problem(file, v.Line, e.at("max_delegation_depth"), "must be between 1 and %d", MaxDelegationDepth)
			ok = false
		}
		if e.fields["actors"] == nil {
			c.problem(file, v.Line, e.at("max_delegation_depth"), "needs actors (it bounds their delegation)")
		} else if ok {
			r.maxDepth = d
		}
	} else if len(r.actors) > 0 && !r.deny {
		r.maxDepth = DefaultMaxDelegationDepth
	}
	if effectKnown && r.deny {
		for _, k := range onAllowOnly {
			if v, ok := e.fields[k]; ok {
				c.problem(file, v.Line, e.at(k), "has no meaning on a deny rule")
			}
		}
	}

	if len(c.problems) != before {
		return
	}
	r.audienceSet = newStringSet(r.audiences)
	r.resourceSet = newStringSet(r.resources)
	r.scopeSet = newStringSet(r.scopes)
	r.allowReason = fmt.Sprintf("rule %q grants every requested target and scope", r.name)
	c.rules = append(c.rules, r)
}

var actorKeys = []string{"upstreams", "subjects", "attributes"}

// actors compiles a rule's actors list, at path.
func (c *compiler) actors(file, path string, n *yaml.Node) []actorSpec {
	items, ok := c.list(file, path, n)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		c.problem(file, n.Line, path, "at least one actor is required (leave the key out to allow no delegation)")
		return nil
	}
	var out []actorSpec
	for i, item := range items {
		e := &entry{file: file, node: item, path: confcheck.Index(path, i)}
		if item.Kind != yaml.MappingNode {
			c.problem(file, item.Line, e.path, "an actor must be a mapping with upstreams and subjects")
			continue
		}
		c.fields(e, actorKeys)
		a := actorSpec{line: item.Line}
		a.upstreams, a.subjects = c.upstreamsAndSubjects(e)
		if v, ok := e.fields["attributes"]; ok {
			a.attributes = c.attributes(file, e.at("attributes"), v)
		}
		out = append(out, a)
	}
	return out
}

// Date layouts of expires and review_by.
const (
	dateLayout     = "2006-01-02"
	dateTimeLayout = time.RFC3339
)

// date reads YYYY-MM-DD (midnight UTC: the date is the first day the rule no
// longer matches) or an RFC 3339 time. YAML reads unquoted dates as timestamps;
// both forms are accepted.
func (c *compiler) date(file, path string, n *yaml.Node) (time.Time, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!timestamp" || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		if t, err := time.Parse(dateLayout, n.Value); err == nil {
			return t.UTC(), true
		}
		if t, err := time.Parse(dateTimeLayout, n.Value); err == nil {
			return t.UTC(), true
		}
		c.problem(file, n.Line, path, "%q is not a date (write YYYY-MM-DD or an RFC 3339 time)", n.Value)
		return time.Time{}, false
	}
	c.str(file, path, n) // reports the type problem
	return time.Time{}, false
}

func (c *compiler) boolean(file, path string, n *yaml.Node) (bool, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	}
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, path, "YAML aliases are not supported")
	} else {
		c.problem(file, n.Line, path, "must be true or false")
	}
	return false, false
}

func (c *compiler) integer(file, path string, n *yaml.Node) (int, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var i int
		if err := n.Decode(&i); err == nil {
			return i, true
		}
	}
	if n.Kind == yaml.AliasNode {
		c.problem(file, n.Line, path, "YAML aliases are not supported")
	} else {
		c.problem(file, n.Line, path, "must be a whole number")
	}
	return 0, false
}

func lineOf(v, parent *yaml.Node) int {
	if v != nil {
		return v.Line
	}
	return parent.Line
}

// stringList checks the optional list of strings under key in e, each with check
// (which returns a complaint or ""), refusing duplicates. It returns the valid
// values.
func (c *compiler) stringList(e *entry, key string, check func(string) string) []located {
	v, ok := e.fields[key]
	if !ok {
		return nil
	}
	items, ok := c.list(e.file, e.at(key), v)
	if !ok {
		return nil
	}
	var out []located
	seen := make(map[string]int, len(items))
	for i, item := range items {
		at := confcheck.Index(e.at(key), i)
		s, ok := c.str(e.file, at, item)
		if !ok {
			continue
		}
		if msg := check(s); msg != "" {
			c.problem(e.file, item.Line, at, "%s", msg)
			continue
		}
		if first, dup := seen[s]; dup {
			c.problem(e.file, item.Line, at, "%q is listed twice (first at line %d)", s, first)
			continue
		}
		seen[s] = item.Line
		out = append(out, located{s, item.Line})
	}
	return out
}

// list checks that n is a sequence (or null, meaning empty) and returns its items.
func (c *compiler) list(file, path string, n *yaml.Node) ([]*yaml.Node, bool) {
	switch {
	case isNull(n):
		return nil, true
	case n.Kind == yaml.SequenceNode:
		return n.Content, true
	case n.Kind == yaml.AliasNode:
		c.problem(file, n.Line, path, "YAML aliases are not supported")
	case n.Kind == yaml.ScalarNode:
		c.problem(file, n.Line, path, "must be a list (write [%s])", n.Value)
	default:
		c.problem(file, n.Line, path, "must be a list")
	}
	return nil, false
}

// str checks that n is a string scalar and returns it. Numbers, booleans and nulls
// are refused rather than converted: quote them.
func (c *compiler) str(file, path string, n *yaml.Node) (string, bool) {
	switch {
	case n.Kind == yaml.AliasNode:
		c.problem(file, n.Line, path, "YAML aliases are not supported")
	case n.Kind != yaml.ScalarNode:
		c.problem(file, n.Line, path, "must be a string")
	case isNull(n):
		c.problem(file, n.Line, path, "has no value")
	case n.ShortTag() != "!!str":
		c.problem(file, n.Line, path, "must be a string, not %s (quote it)", strings.TrimPrefix(n.ShortTag(), "!!"))
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

// checkText is the rule for owners and attribute value patterns: non-empty
// printable text, spaces allowed inside but not around it.
func checkText(s string) string {
	if s == "" {
		return "must not be empty"
	}
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return "must not contain control or invisible characters"
		}
	}
	if strings.TrimSpace(s) != s {
		return "must not start or end with a space"
	}
	return ""
}

// checkResource is checkExact for RFC 8707 resources: absolute URIs without a
// fragment.
func checkResource(s string) string {
	if msg := checkExact(s); msg != "" {
		return strings.Replace(msg, "audiences are", "resources are", 1)
	}
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(s, "#") {
		return "must be an absolute URI without a fragment (RFC 8707)"
	}
	return ""
}
