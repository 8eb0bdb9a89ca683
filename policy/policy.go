package policy

import (
	"fmt"
	"slices"
	"time"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// Effects a rule may have.
const (
	EffectAllow = "allow"
	EffectDeny  = "deny"
)

// Policy is a compiled, validated set of rules. It is immutable once built by Load,
// Parse or ParseFiles, so one Policy may serve any number of concurrent Decide
// calls; a reload builds a new Policy and swaps the pointer.
type Policy struct {
	// rules in file order (files in the order given, rules in the order written).
	rules []*rule
	// index holds, per upstream name, the rules naming that upstream, in file order,
	// so Decide never looks at rules of other upstreams.
	index    map[string]*upstreamRules
	warnings []Problem
}

type upstreamRules struct {
	deny  []*rule
	allow []*rule
}

// rule is the compiled form of one YAML rule.
type rule struct {
	name     string
	deny     bool
	file     string
	line     int
	upstream []located
	subjects []glob.Glob
	// audiences and scopes keep the written order for Rules(); the sets answer
	// membership for Decide.
	audiences   []string
	scopes      []string
	audienceSet stringSet
	scopeSet    stringSet
	maxTTL      time.Duration
	// allowReason is the Reason of an Allow decided by this rule, built at load so
	// the allow path does not format strings.
	allowReason string
}

// located is a string from the policy with the line it was written on.
type located struct {
	value string
	line  int
}

// matchesWorkload reports whether the rule's subject patterns match subject. The
// caller has already selected the rule by upstream through the index.
//
// This is the seam where later conditions (attributes, CEL over workload, request
// and time) join the static match.
func (r *rule) matchesWorkload(subject string) bool {
	for i := range r.subjects {
		if r.subjects[i].Match(subject) {
			return true
		}
	}
	return false
}

// firstMissing returns the index of the first value not in set, or -1 when set holds
// every value.
func firstMissing(set *stringSet, values []string) int {
	for i, v := range values {
		if !set.has(v) {
			return i
		}
	}
	return -1
}

// firstPresent returns the index of the first value in set, or -1 when none is.
func firstPresent(set *stringSet, values []string) int {
	for i, v := range values {
		if set.has(v) {
			return i
		}
	}
	return -1
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
	// Effect is EffectAllow or EffectDeny.
	Effect string
	// File and Line locate the rule's definition.
	File string
	Line int
	// Upstreams are exact upstream names; Subjects are glob patterns.
	Upstreams []string
	Subjects  []string
	// Audiences and Scopes are exact values. On a deny rule an empty list means any.
	Audiences []string
	Scopes    []string
	// MaxTTL is zero when the rule sets no cap.
	MaxTTL time.Duration
}

// Rules returns every rule in file order.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, 0, len(p.rules))
	for _, r := range p.rules {
		x := Rule{
			Name:      r.name,
			Effect:    EffectAllow,
			File:      r.file,
			Line:      r.line,
			Audiences: slices.Clone(r.audiences),
			Scopes:    slices.Clone(r.scopes),
			MaxTTL:    r.maxTTL,
		}
		if r.deny {
			x.Effect = EffectDeny
		}
		for _, u := range r.upstream {
			x.Upstreams = append(x.Upstreams, u.value)
		}
		for _, g := range r.subjects {
			x.Subjects = append(x.Subjects, g.Pattern())
		}
		out = append(out, x)
	}
	return out
}

// Warnings returns what is legal but probably not meant, such as a file that defines
// no rules. They are worth printing (`sts check-config`) but do not stop a load.
func (p *Policy) Warnings() []Problem {
	if p == nil {
		return nil
	}
	return slices.Clone(p.warnings)
}

// ValidateUpstreams checks that every upstream a rule names is one of known (the
// upstream names in the server configuration). A rule naming an unknown upstream is
// almost always a typo that would silently never match, so the caller should refuse
// the policy: the returned error is a *LoadError with the file:line of every unknown
// name. An empty known set makes every named upstream unknown.
func (p *Policy) ValidateUpstreams(known []string) error {
	if p == nil {
		return nil
	}
	set := make(map[string]struct{}, len(known))
	for _, k := range known {
		set[k] = struct{}{}
	}
	var problems []Problem
	for _, r := range p.rules {
		for _, u := range r.upstream {
			if _, ok := set[u.value]; !ok {
				problems = append(problems, Problem{
					File: r.file,
					Line: u.line,
					Msg:  fmt.Sprintf("rule %q: upstream %q is not configured", r.name, u.value),
				})
			}
		}
	}
	if len(problems) > 0 {
		return &LoadError{Problems: problems}
	}
	return nil
}

// buildIndex groups the rules by upstream, keeping file order within each group.
func buildIndex(rules []*rule) map[string]*upstreamRules {
	index := make(map[string]*upstreamRules)
	for _, r := range rules {
		for _, u := range r.upstream {
			ur := index[u.value]
			if ur == nil {
				ur = &upstreamRules{}
				index[u.value] = ur
			}
			if r.deny {
				ur.deny = append(ur.deny, r)
			} else {
				ur.allow = append(ur.allow, r)
			}
		}
	}
	return index
}
