package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/internal/confcheck"
	"github.com/safeconduct/safeconduct/internal/glob"
)

// Effects a rule may have.
const (
	EffectAllow = "allow"
	EffectDeny  = "deny"
)

// Modes a rule may have.
const (
	// ModeEnforce rules decide (the default).
	ModeEnforce = "enforce"
	// ModeAudit rules are evaluated and reported in Decision.Audited, and never
	// change a decision.
	ModeAudit = "audit"
)

// DefaultMaxDelegationDepth is the max_delegation_depth of a rule with actors that
// sets none: a direct actor only.
const DefaultMaxDelegationDepth = 1

// MaxDelegationDepth bounds max_delegation_depth.
const MaxDelegationDepth = 10

// TrustDomainAttribute is the workload attribute trust_domains match.
const TrustDomainAttribute = "trust_domain"

// Policy is a compiled, validated set of rules. It is immutable once built by Load,
// Parse or ParseFiles, so one Policy may serve any number of concurrent Decide
// calls; a reload builds a new Policy and swaps the pointer.
type Policy struct {
	// files are the file names, in the order given.
	files []string
	// rules in file order (files in the order given, rules in the order written).
	rules []*rule
	// index holds, per upstream name, the rules naming that upstream, indexed by
	// subject pattern, so Decide looks only at rules whose patterns can match.
	index map[string]*subjectIndex
	// admin rules in file order, and per upstream.
	admin      []*adminRule
	adminIndex map[string][]*adminRule
	// sensitive audience patterns, for Review.
	sensitive []glob.Glob
	warnings  []Problem
	// digests identify the files compiled (Digest, Files).
	digests []FileDigest
	// bruteForce (tests only) makes Decide look at every rule of the upstream
	// and run every condition: the reference the indexes must agree with.
	bruteForce bool
}

// rule is the compiled form of one YAML rule.
type rule struct {
	name  string
	deny  bool
	audit bool
	file  string
	line  int
	// ord is the rule's position in file order over the whole policy.
	ord int

	matcher

	// audiences, resources and scopes keep the written order for Rules(); the
	// sets answer membership for Decide. hasResources tells whether the rule
	// lists resources (then requested resources are checked against them), or
	// grants its audiences as resources too (v0).
	audiences    []string
	resources    []string
	scopes       []string
	hasResources bool
	audienceSet  stringSet
	resourceSet  stringSet
	scopeSet     stringSet

	maxTTL         time.Duration
	copyAttributes []string
	requireSender  bool
	// clients, when set, are the authenticated clients the rule grants to.
	clients []glob.Glob

	actors   []actorSpec
	maxDepth int

	// allowReason is the Reason of an Allow decided by this rule, built at load so
	// the allow path does not format strings.
	allowReason string
}

// matcher is what rules and admin rules match a workload by (and their
// lifecycle): a rule matches when the workload's upstream is one of upstream, its
// subject matches one of subjects, it has every attribute (the trust_domain one
// among trustDomains), the rule has not expired and its condition holds.
type matcher struct {
	// path locates the rule in its file ("rules[3]"), for problems.
	path string

	owner             string
	expires, reviewBy time.Time

	upstream     []located
	subjects     []glob.Glob
	trustDomains []string
	attributes   []attrMatch
	when         *condition
}

// attrMatch is one entry of an attributes mapping.
type attrMatch struct {
	name    string
	pattern glob.Glob
}

// actorSpec is one entry of a rule's actors.
type actorSpec struct {
	line       int
	upstreams  []located
	subjects   []glob.Glob
	attributes []attrMatch
}

// located is a string from the policy with the line it was written on.
type located struct {
	value string
	line  int
}

func matchSubjects(subjects []glob.Glob, subject string) bool {
	for i := range subjects {
		if subjects[i].Match(subject) {
			return true
		}
	}
	return false
}

// matchAttributes returns the index of the first attribute w lacks or whose value
// does not match, or -1 when every one matches. A missing attribute never matches,
// whatever the pattern.
func matchAttributes(attrs []attrMatch, w *attest.Workload) int {
	for i := range attrs {
		v, ok := w.Attributes[attrs[i].name]
		if !ok || !attrs[i].pattern.Match(v) {
			return i
		}
	}
	return -1
}

// matchTrustDomain reports whether w's trust_domain attribute is one of domains.
func matchTrustDomain(domains []string, w *attest.Workload) bool {
	td, ok := w.Attributes[TrustDomainAttribute]
	return ok && slices.Contains(domains, td)
}

func (a *actorSpec) matches(w *attest.Workload) bool {
	up := false
	for _, u := range a.upstreams {
		if u.value == w.Upstream {
			up = true
			break
		}
	}
	return up && matchSubjects(a.subjects, w.Subject) && matchAttributes(a.attributes, w) < 0
}

// stringSet answers membership for a rule's audiences or scopes: a linear scan for
// the usual handful of values, a map beyond that.
type stringSet struct {
	list []string
	m    map[string]struct{}
}

const stringSetMapThreshold = 8

func newStringSet(values []string) stringSet {
	s := stringSet{list: values}
	if len(values) > stringSetMapThreshold {
		s.m = make(map[string]struct{}, len(values))
		for _, v := range values {
			s.m[v] = struct{}{}
		}
	}
	return s
}

func (s *stringSet) has(v string) bool {
	if s.m != nil {
		_, ok := s.m[v]
		return ok
	}
	return slices.Contains(s.list, v)
}

// Rule is a read-only description of one rule, for reviews (`stsctl policy review`),
// listings and tests. Changing it does not change the Policy.
type Rule struct {
	Name string
	// Effect is EffectAllow or EffectDeny; Mode is ModeEnforce or ModeAudit.
	Effect string
	Mode   string
	// File and Line locate the rule's definition.
	File string
	Line int
	// Owner, Expires and ReviewBy are the lifecycle keys; zero when not set.
	// Expires and ReviewBy are in UTC.
	Owner    string
	Expires  time.Time
	ReviewBy time.Time
	// Upstreams are exact upstream names; Subjects are glob patterns.
	Upstreams []string
	Subjects  []string
	// TrustDomains are exact values of the trust_domain attribute; Attributes
	// maps attribute names to glob patterns. Nil when not set.
	TrustDomains []string
	Attributes   map[string]string
	// When is the condition's CEL source; empty when the rule has none.
	When string
	// Audiences, Resources and Scopes are exact values. On a deny rule empty
	// Audiences and Resources mean any target, empty Scopes any scope. On an allow
	// rule without Resources, Audiences are granted as resources too.
	Audiences []string
	Resources []string
	Scopes    []string
	// MaxTTL is zero when the rule sets no cap.
	MaxTTL time.Duration
	// CopyAttributes are the attributes copied into minted tokens.
	CopyAttributes []string
	// RequireSenderConstraint: the rule grants only sender-constrained tokens.
	RequireSenderConstraint bool
	// Clients are the patterns of the authenticated clients the rule grants to;
	// empty = any caller, authenticated or not.
	Clients []string
	// Actors may act for the rule's subjects; MaxDelegationDepth bounds the
	// delegation (zero when the rule has no actors).
	Actors             []Actor
	MaxDelegationDepth int
}

// Actor is one entry of a rule's actors.
type Actor struct {
	Upstreams  []string
	Subjects   []string
	Attributes map[string]string
}

// Rules returns every rule in file order.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, 0, len(p.rules))
	for _, r := range p.rules {
		x := Rule{
			Name:                    r.name,
			Effect:                  EffectAllow,
			Mode:                    ModeEnforce,
			File:                    r.file,
			Line:                    r.line,
			Owner:                   r.owner,
			Expires:                 r.expires,
			ReviewBy:                r.reviewBy,
			Upstreams:               values(r.upstream),
			Subjects:                patterns(r.subjects),
			TrustDomains:            slices.Clone(r.trustDomains),
			Attributes:              attrMap(r.attributes),
			Audiences:               slices.Clone(r.audiences),
			Resources:               slices.Clone(r.resources),
			Scopes:                  slices.Clone(r.scopes),
			MaxTTL:                  r.maxTTL,
			CopyAttributes:          slices.Clone(r.copyAttributes),
			RequireSenderConstraint: r.requireSender,
			Clients:                 patterns(r.clients),
			MaxDelegationDepth:      r.maxDepth,
		}
		if r.deny {
			x.Effect = EffectDeny
		}
		if r.audit {
			x.Mode = ModeAudit
		}
		if r.when != nil {
			x.When = r.when.src
		}
		for _, a := range r.actors {
			x.Actors = append(x.Actors, Actor{
				Upstreams:  values(a.upstreams),
				Subjects:   patterns(a.subjects),
				Attributes: attrMap(a.attributes),
			})
		}
		out = append(out, x)
	}
	return out
}

// SensitiveAudiences returns the sensitive_audiences patterns of every file, in
// file order.
func (p *Policy) SensitiveAudiences() []string {
	if p == nil {
		return nil
	}
	return patterns(p.sensitive)
}

func values(l []located) []string {
	if len(l) == 0 {
		return nil
	}
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = v.value
	}
	return out
}

func patterns(l []glob.Glob) []string {
	if len(l) == 0 {
		return nil
	}
	out := make([]string, len(l))
	for i := range l {
		out[i] = l[i].Pattern()
	}
	return out
}

func attrMap(attrs []attrMatch) map[string]string {
	if len(attrs) == 0 {
		return nil
	}
	m := make(map[string]string, len(attrs))
	for _, a := range attrs {
		m[a.name] = a.pattern.Pattern()
	}
	return m
}

// FileDigest identifies one policy file as it was compiled: its name (as given to
// Load or ParseFiles) and the SHA-256 of its content, in hex, as sha256sum prints
// it.
type FileDigest struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Files returns the digest of every file of the policy, in order.
func (p *Policy) Files() []FileDigest {
	if p == nil {
		return nil
	}
	return slices.Clone(p.digests)
}

// Digest identifies the policy's content: "sha256:" and the hex SHA-256 of the
// sha256sum listing of its files, in order ("HEX  NAME\n" per file), so
// `sha256sum a.yaml b.yaml | sha256sum` run with the same names reproduces it.
func (p *Policy) Digest() string {
	if p == nil {
		return ""
	}
	h := sha256.New()
	for _, f := range p.digests {
		fmt.Fprintf(h, "%s  %s\n", f.SHA256, f.Name)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Warnings returns what is legal but probably not meant, such as a file that defines
// no rules. They are worth printing (`sts check-config`) but do not stop a load.
func (p *Policy) Warnings() []Problem {
	if p == nil {
		return nil
	}
	return slices.Clone(p.warnings)
}

// ValidateUpstreams checks that every upstream the policy names is one of known
// (the upstream names in the server configuration): the upstreams of rules, of
// their actors, and of admin rules (callers and within_upstreams). A rule naming an
// unknown upstream is almost always a typo that would silently never match, so the
// caller should refuse the policy: the returned error is a *LoadError with the
// file:line of every unknown name. An empty known set makes every named upstream
// unknown.
func (p *Policy) ValidateUpstreams(known []string) error {
	if p == nil {
		return nil
	}
	set := make(map[string]struct{}, len(known))
	for _, k := range known {
		set[k] = struct{}{}
	}
	var problems []Problem
	check := func(file, path string, l located) {
		if _, ok := set[l.value]; !ok {
			problems = append(problems, Problem{File: file, Line: l.line, Path: path, Message: fmt.Sprintf("upstream %q is not configured", l.value)})
		}
	}
	for _, r := range p.rules {
		for _, u := range r.upstream {
			check(r.file, confcheck.Key(r.path, "upstreams"), u)
		}
		for _, a := range r.actors {
			for _, u := range a.upstreams {
				check(r.file, confcheck.Key(r.path, "actors"), u)
			}
		}
	}
	for _, r := range p.admin {
		for _, u := range r.upstream {
			check(r.file, confcheck.Key(r.path, "upstreams"), u)
		}
		for _, u := range r.within {
			check(r.file, confcheck.Key(r.path, "within_upstreams"), u)
		}
	}
	if len(problems) > 0 {
		confcheck.Sort(problems, p.files...)
		return &LoadError{Problems: problems}
	}
	return nil
}

// subjectIndex holds the rules of one upstream by subject pattern, so a decision
// looks only at the rules with a pattern that can match the subject: literal
// patterns in a map by subject; patterns with a literal prefix before their first
// '*' in a map by that prefix, probed with the subject's prefixes of the lengths
// that occur; patterns starting with '*' in a list. Each entry is a ruleBucket,
// which indexes its rules again on their conditions' first equality term (see
// whenindex.go). Every list is in file order, and candidates merges them back into
// file order.
type subjectIndex struct {
	exact   map[string]*ruleBucket
	prefix  map[string]*ruleBucket
	lengths []int // the distinct prefix lengths, ascending
	wild    ruleBucket
	// all is every rule of the upstream in file order (Explain and Review).
	all []*rule
}

func (ix *subjectIndex) add(r *rule) {
	ix.all = append(ix.all, r)
	bucket := func(m map[string]*ruleBucket, k string) *ruleBucket {
		b := m[k]
		if b == nil {
			b = &ruleBucket{}
			m[k] = b
		}
		return b
	}
	for i := range r.subjects {
		g := &r.subjects[i]
		switch {
		case g.Literal():
			bucket(ix.exact, g.Pattern()).add(r)
		case g.Prefix() == "":
			ix.wild.add(r)
		default:
			p := g.Prefix()
			if _, ok := ix.prefix[p]; !ok {
				if n, found := slices.BinarySearch(ix.lengths, len(p)); !found {
					ix.lengths = slices.Insert(ix.lengths, n, len(p))
				}
			}
			bucket(ix.prefix, p).add(r)
		}
	}
}

// candidates returns, in file order and without repeats, the rules with a pattern
// that may match w's subject (each still has to Match) and, unless all is set,
// whose condition's first equality term may hold for w. It appends to buf when it
// has to merge several lists, and otherwise returns a list of the index itself:
// treat the result as read-only.
func (ix *subjectIndex) candidates(w *attest.Workload, all bool, buf []*rule) []*rule {
	subject := w.Subject
	if all {
		w = nil
	}
	var srcBuf [16][]*rule
	srcs := srcBuf[:0]
	if len(ix.exact) > 0 {
		if b := ix.exact[subject]; b != nil {
			srcs = b.appendSources(srcs, w)
		}
	}
	for _, n := range ix.lengths {
		if n > len(subject) {
			break
		}
		if b := ix.prefix[subject[:n]]; b != nil {
			srcs = b.appendSources(srcs, w)
		}
	}
	if len(ix.wild.rules) > 0 {
		srcs = ix.wild.appendSources(srcs, w)
	}
	switch len(srcs) {
	case 0:
		return nil
	case 1:
		return srcs[0]
	}
	out := buf[:0]
	for {
		best := -1
		for i, s := range srcs {
			if len(s) > 0 && (best < 0 || s[0].ord < srcs[best][0].ord) {
				best = i
			}
		}
		if best < 0 {
			return out
		}
		r := srcs[best][0]
		srcs[best] = srcs[best][1:]
		if n := len(out); n == 0 || out[n-1] != r {
			out = append(out, r)
		}
	}
}

// buildIndex groups the rules by upstream and subject pattern, keeping file order.
func buildIndex(rules []*rule) map[string]*subjectIndex {
	index := make(map[string]*subjectIndex)
	for _, r := range rules {
		for _, u := range r.upstream {
			ix := index[u.value]
			if ix == nil {
				ix = &subjectIndex{exact: make(map[string]*ruleBucket), prefix: make(map[string]*ruleBucket)}
				index[u.value] = ix
			}
			ix.add(r)
		}
	}
	return index
}
