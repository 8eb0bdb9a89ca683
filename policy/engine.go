package policy

import (
	"fmt"
	"strings"
)

// Limits on one request. Beyond them Decide refuses without looking at rules, so the
// cost of a decision stays bounded whatever a caller sends. The edge may check them
// first to answer invalid_request earlier.
const (
	// MaxTargets bounds the requested audiences plus resources.
	MaxTargets = 100
	// MaxScopes bounds the requested scopes.
	MaxScopes = 100
)

// Decide answers req. It is pure (no I/O, no clock, no randomness) and safe for
// concurrent use. See the package documentation for the semantics.
//
// On the allow path Decide does not allocate unless the request holds both
// audiences and resources or repeats a value. The Audiences and Scopes of the
// Decision may then share backing arrays with the Request's slices (capped, so an
// append copies): treat both as read-only.
func (p *Policy) Decide(req Request) Decision {
	if p == nil {
		return Decision{Outcome: DenyNoRule, Reason: "no policy is loaded"}
	}
	w := req.Workload
	if w == nil {
		return Decision{Outcome: DenyNoRule, Reason: "the request has no attested workload"}
	}
	n := len(req.Audiences) + len(req.Resources)
	if n == 0 {
		return Decision{Outcome: DenyTarget, Reason: "no audience or resource requested"}
	}
	if n > MaxTargets {
		return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf("%d targets requested, more than the %d allowed", n, MaxTargets)}
	}
	if len(req.Scopes) > MaxScopes {
		return Decision{Outcome: DenyScope, Reason: fmt.Sprintf("%d scopes requested, more than the %d allowed", len(req.Scopes), MaxScopes)}
	}
	targets := joinUnique(req.Audiences, req.Resources)
	scopes := joinUnique(req.Scopes, nil)

	rules := p.index[w.Upstream]
	if rules == nil {
		return denyNoRule(w.Upstream, w.Subject)
	}

	// Deny rules first: an explicit deny beats any allow, wherever it is written.
	for _, r := range rules.deny {
		if !r.matchesWorkload(w.Subject) {
			continue
		}
		t := -1
		if len(r.audiences) > 0 {
			if t = firstPresent(&r.audienceSet, targets); t < 0 {
				continue
			}
		}
		s := -1
		if len(r.scopes) > 0 {
			if s = firstPresent(&r.scopeSet, scopes); s < 0 {
				continue
			}
		}
		return denyRule(r, w.Upstream, w.Subject, targets, scopes, t, s)
	}

	// Then the first allow rule that grants the whole request by itself. Targets
	// and scopes granted by different rules are never combined.
	matched := false
	for _, r := range rules.allow {
		if !r.matchesWorkload(w.Subject) {
			continue
		}
		matched = true
		if firstMissing(&r.audienceSet, targets) >= 0 || firstMissing(&r.scopeSet, scopes) >= 0 {
			continue
		}
		return Decision{
			Outcome:   Allow,
			Rule:      r.name,
			Reason:    r.allowReason,
			Audiences: targets,
			Scopes:    scopes,
			MaxTTL:    r.maxTTL,
		}
	}
	if !matched {
		return denyNoRule(w.Upstream, w.Subject)
	}
	return explainRefusal(rules.allow, w.Subject, targets, scopes)
}

// joinUnique returns a followed by b without repeated values, in order. It returns
// a itself (capped) when b is empty and a holds no repeats, so the common request
// costs no allocation.
func joinUnique(a, b []string) []string {
	if len(a)+len(b) == 0 {
		return nil
	}
	if len(b) == 0 && !hasRepeat(a) {
		return a[:len(a):len(a)]
	}
	if len(a) == 0 && !hasRepeat(b) {
		return b[:len(b):len(b)]
	}
	out := make([]string, 0, len(a)+len(b))
	for _, list := range [2][]string{a, b} {
		for _, v := range list {
			if !contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// hasRepeat is quadratic, which the request limits keep cheap.
func hasRepeat(list []string) bool {
	for i := 1; i < len(list); i++ {
		if contains(list[:i], list[i]) {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func denyNoRule(upstream, subject string) Decision {
	return Decision{
		Outcome: DenyNoRule,
		Reason:  fmt.Sprintf("no rule matches upstream %q subject %q", upstream, subject),
	}
}

// denyRule builds the decision of deny rule r; t and s index the target and scope
// that made it apply (-1 when the rule applies to any).
func denyRule(r *rule, upstream, subject string, targets, scopes []string, t, s int) Decision {
	var b strings.Builder
	fmt.Fprintf(&b, "deny rule %q refuses upstream %q subject %q", r.name, upstream, subject)
	if t >= 0 {
		fmt.Fprintf(&b, " for target %q", targets[t])
	}
	if s >= 0 {
		fmt.Fprintf(&b, " with scope %q", scopes[s])
	}
	return Decision{Outcome: DenyRule, Rule: r.name, Reason: b.String()}
}

// explainRefusal says why no allow rule that matches the workload grants the
// request: first the targets, then the scopes. It runs only on the deny path.
func explainRefusal(allow []*rule, subject string, targets, scopes []string) Decision {
	// The rules that match the workload, and among them those granting every target.
	var matching, granting []*rule
	for _, r := range allow {
		if r.matchesWorkload(subject) {
			matching = append(matching, r)
			if firstMissing(&r.audienceSet, targets) < 0 {
				granting = append(granting, r)
			}
		}
	}
	if len(granting) == 0 {
		// A target no matching rule grants at all is the clearest answer.
		for _, t := range targets {
			if !anyGrants(matching, func(r *rule) *stringSet { return &r.audienceSet }, t) {
				return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf("no rule grants target %q to this workload", t)}
			}
		}
		r := matching[0]
		t := targets[firstMissing(&r.audienceSet, targets)]
		return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf(
			"no single rule grants every requested target (rule %q refuses target %q), and targets of different rules are never combined", r.name, t)}
	}
	for _, s := range scopes {
		if !anyGrants(granting, func(r *rule) *stringSet { return &r.scopeSet }, s) {
			return Decision{Outcome: DenyScope, Reason: fmt.Sprintf("no rule granting the requested targets grants scope %q", s)}
		}
	}
	r := granting[0]
	s := scopes[firstMissing(&r.scopeSet, scopes)]
	return Decision{Outcome: DenyScope, Reason: fmt.Sprintf(
		"no single rule grants the requested targets with every requested scope (rule %q refuses scope %q), and scopes of different rules are never combined", r.name, s)}
}

func anyGrants(rules []*rule, set func(*rule) *stringSet, v string) bool {
	for _, r := range rules {
		if set(r).has(v) {
			return true
		}
	}
	return false
}
