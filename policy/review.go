package policy

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/internal/glob"
)

// Review is an access review of a policy (`stsctl policy review`): what each
// workload can obtain, what is denied, who holds admin rights, and what deserves
// a look. It is built from the policy alone (plus usage counts when the server has
// them), so it says what rules allow, not who asked. Its content is deterministic:
// the same policy, time and usage give the same Review, byte for byte.
type Review struct {
	// Schema names the JSON layout, ReviewSchema; it changes only when a field
	// changes meaning or goes away (docs/policy-review.md).
	Schema string `json:"schema"`
	// AsOf is the time the review was made for (expiry and review dates).
	AsOf time.Time `json:"as_of"`
	// UsageKnown is set when usage counts were given; only then are rules
	// reported unused.
	UsageKnown bool `json:"usage_known"`
	// Upstreams are what enforced, unexpired allow rules grant, by upstream and
	// subject pattern, upstreams and patterns in lexical order.
	Upstreams []UpstreamAccess `json:"upstreams"`
	// DenyRules are the deny rules in file order (audit-mode ones included).
	DenyRules []DenyRuleReview `json:"deny_rules"`
	// Admin are the admin rules in file order.
	Admin []AdminAccess `json:"admin"`
	// Findings are ranked: by severity (high, warning, info), then by the
	// sensitivity of what the rule grants (sensitive, elevated, normal), then in
	// file and line order.
	Findings []Finding `json:"findings"`
}

// ReviewSchema is Review.Schema.
const ReviewSchema = "safeconduct.policy-review/v1"

// UpstreamAccess is what the workloads of one upstream can obtain.
type UpstreamAccess struct {
	Upstream string `json:"upstream"`
	// AssertsOnly are the subject patterns the upstream may assert at all (its
	// configured `subjects`, ReviewOptions.UpstreamSubjects); empty when unknown or
	// unlimited. No rule grants a subject outside them.
	AssertsOnly []string `json:"asserts_only,omitempty"`
	// Preset, RequiredClaims, AttributeBounds and Condition are the upstream's
	// own limits (ReviewOptions.Upstreams): every token must satisfy them before
	// any rule applies.
	Preset          string              `json:"preset,omitempty"`
	RequiredClaims  map[string]string   `json:"required_claims,omitempty"`
	AttributeBounds map[string][]string `json:"attribute_bounds,omitempty"`
	Condition       string              `json:"condition,omitempty"`
	Subjects        []SubjectAccess     `json:"subjects"`
	// NeverAsserted are subject patterns rules list for this upstream that match
	// nothing it asserts (its subjects), and rules it can never satisfy (an
	// attribute pattern outside its attribute_bounds), as "rule: why". The server
	// refuses them; they grant nothing and are not in Subjects.
	NeverAsserted []string `json:"never_asserted,omitempty"`
}

// SubjectAccess is what the workloads matching one subject pattern can obtain,
// over every rule that lists the pattern. Each list is sorted and without
// repeats. A pattern whose lone '*' means one thing in a file without `version:
// 2` and another in one with it ("repo:acme/*") is two entries when files of
// both versions list it: the version 1 one first, each with its own rules.
type SubjectAccess struct {
	Subject string `json:"subject"`
	// Effective is the breadth of Subject within the upstream's AssertsOnly, when
	// it is narrower: the upstream patterns Subject covers, Subject itself where an
	// upstream pattern covers it, and "Subject within P" where they overlap
	// otherwise.
	Effective []string `json:"effective_subjects,omitempty"`
	// Breadth says what the effective subjects span when that is more than one
	// namespace, repository owner or SPIFFE path root (see FindingBroad).
	Breadth string `json:"breadth,omitempty"`
	// Audiences and Resources are the obtainable targets. A rule that lists no
	// resources grants its audiences as resources too; only the resources rules
	// list are shown here.
	Audiences []string `json:"audiences"`
	Resources []string `json:"resources,omitempty"`
	Scopes    []string `json:"scopes"`
	// MaxTTL is the largest max_ttl of the rules, or "none" when one of them sets
	// no cap (the server's limits apply).
	MaxTTL         string   `json:"max_ttl"`
	CopyAttributes []string `json:"copy_attributes,omitempty"`
	// Actors may act for these workloads (delegation).
	Actors []ActorAccess `json:"actors,omitempty"`
	// Conditions narrow some of the rules: `rule: when ...`, `rule: attributes
	// ...`, and the like. A grant with conditions is not obtainable everywhere.
	Conditions []string `json:"conditions,omitempty"`
	// Rules are the names of the rules, in file order.
	Rules []string `json:"rules"`
}

// ActorAccess is one actors entry of a rule.
type ActorAccess struct {
	Rule       string            `json:"rule"`
	Upstreams  []string          `json:"upstreams"`
	Subjects   []string          `json:"subjects"`
	Attributes map[string]string `json:"attributes,omitempty"`
	MaxDepth   int               `json:"max_depth"`
}

// DenyRuleReview describes one deny rule. Empty Targets or Scopes mean any.
type DenyRuleReview struct {
	Rule       string   `json:"rule"`
	File       string   `json:"file"`
	Line       int      `json:"line"`
	Mode       string   `json:"mode"`
	Upstreams  []string `json:"upstreams"`
	Subjects   []string `json:"subjects"`
	Targets    []string `json:"targets,omitempty"`
	Scopes     []string `json:"scopes,omitempty"`
	Conditions []string `json:"conditions,omitempty"`
}

// AdminAccess describes one admin rule.
type AdminAccess struct {
	Rule            string   `json:"rule"`
	File            string   `json:"file"`
	Line            int      `json:"line"`
	Upstreams       []string `json:"upstreams"`
	Subjects        []string `json:"subjects"`
	Actions         []string `json:"actions"`
	WithinUpstreams []string `json:"within_upstreams"`
	Conditions      []string `json:"conditions,omitempty"`
}

// Kinds of Finding.
const (
	FindingUnused         = "unused"          // usage is known and the rule never matched
	FindingReviewOverdue  = "review_overdue"  // review_by is past
	FindingExpired        = "expired"         // expires is past, and the rule is still in the file
	FindingNoOwner        = "no_owner"        // the rule names no owner
	FindingBroad          = "broad"           // a subject pattern spans more than one namespace, repository owner or SPIFFE path root (or has no literal prefix)
	FindingAuditMode      = "audit_mode"      // the rule is in audit mode (a reminder)
	FindingDeepDelegation = "deep_delegation" // the rule allows delegation chains longer than one actor
	FindingUnreachable    = "unreachable"     // no subject pattern matches what an upstream of the rule asserts, or an attribute pattern is outside its bounds
	FindingGitHubUnpinned = "github_unpinned" // a rule of a github_actions upstream pins neither event_name nor a protected ref nor an environment
	// FindingCrossesSegments: in a file without `version: 2`, a pattern of an
	// allow or admin rule has a '*' that also matches ':' and '/'.
	FindingCrossesSegments = "crosses_segments"
)

// Sensitivities of a Finding: how much the rule it is about grants.
//   - sensitive: a target matching the policy's sensitive_audiences, or admin rights;
//   - elevated: a scope that writes or administers (its name contains write,
//     admin, delete or manage, or is "*"), or a max_ttl over an hour;
//   - normal: anything else.
//
// Deny rules' findings have none.
const (
	SensitivitySensitive = "sensitive"
	SensitivityElevated  = "elevated"
	SensitivityNormal    = "normal"
)

// Severities of a Finding.
const (
	SeverityInfo    = "info"
	SeverityWarning = "warning"
	SeverityHigh    = "high"
)

// Finding is something in the policy worth a look.
type Finding struct {
	Rule        string `json:"rule"`
	File        string `json:"file"`
	Line        int    `json:"line"`
	Kind        string `json:"kind"`
	Severity    string `json:"severity"`
	Sensitivity string `json:"sensitivity,omitempty"`
	Message     string `json:"message"`
}

// ReviewOptions are what a review knows beyond the policy.
type ReviewOptions struct {
	// Usage counts the matches of each rule (and admin rule) by name, as the
	// server recorded them; nil when unknown, and no rule is reported unused.
	Usage map[string]uint64
	// UpstreamSubjects are, by upstream name, the subject patterns each upstream
	// may assert at all: its configured `subjects`, which the upstream's verifier
	// enforces before policy (for a SPIFFE upstream, "spiffe://TRUST_DOMAIN/*" at
	// least). They are read as the verifiers read them, with version 1 meaning
	// ('*' matches ':' and '/' too), whatever the version of the policy files. A
	// rule's subject pattern (read with its file's version) grants nothing outside
	// them: the review shows the effective breadth, notes the limit on broad
	// findings, and reports patterns that can match nothing (unreachable). An
	// upstream missing from the map may assert any subject.
	UpstreamSubjects map[string][]string
	// Upstreams are, by upstream name, the upstream's own limits beyond its
	// subjects: shown with its access, used to drop rules it can never satisfy,
	// and to check github_actions rules (FindingGitHubUnpinned).
	Upstreams map[string]UpstreamLimits
}

// UpstreamLimits are what an upstream checks on every token before policy (its
// STS configuration).
type UpstreamLimits struct {
	Preset          string
	RequiredClaims  map[string]string
	AttributeBounds map[string][]string
	Condition       string
}

// Review reviews the policy as of now. usage counts the matches of each rule (and
// admin rule) by name, as the server recorded them; pass nil when unknown, and no
// rule is reported unused. It is ReviewWith without upstream limits.
func (p *Policy) Review(now time.Time, usage map[string]uint64) *Review {
	return p.ReviewWith(now, ReviewOptions{Usage: usage})
}

// ReviewWith reviews the policy as of now with what o knows of usage and of the
// upstreams.
func (p *Policy) ReviewWith(now time.Time, o ReviewOptions) *Review {
	usage := o.Usage
	// What each upstream's condition bounds (conditionBounds): attribute values,
	// and the subjects of an upstream without configured ones.
	condBounds := make(map[string]map[string][]string, len(o.Upstreams))
	asserts := maps.Clone(o.UpstreamSubjects)
	for u, ul := range o.Upstreams {
		cb := conditionBounds(ul.Condition)
		if subs := cb["sub"]; len(subs) > 0 && len(asserts[u]) == 0 {
			if asserts == nil {
				asserts = map[string][]string{}
			}
			asserts[u] = subs
		}
		delete(cb, "sub")
		condBounds[u] = cb
	}
	o.UpstreamSubjects = asserts
	limits := make(map[string][]glob.Glob, len(o.UpstreamSubjects))
	for u, l := range o.UpstreamSubjects {
		for _, pat := range l {
			limits[u] = append(limits[u], glob.Compile(pat))
		}
	}
	rv := &Review{
		Schema:     ReviewSchema,
		AsOf:       now.UTC(),
		UsageKnown: usage != nil,
		Upstreams:  []UpstreamAccess{},
		DenyRules:  []DenyRuleReview{},
		Admin:      []AdminAccess{},
		Findings:   []Finding{},
	}
	if p == nil {
		return rv
	}
	expired := func(m *matcher) bool { return !m.expires.IsZero() && !now.Before(m.expires) }

	// Access, from enforced, unexpired allow rules, within what each upstream
	// asserts: patterns it never asserts and rules it never satisfies go to
	// never_asserted instead. Each pattern is read in the mode its file compiled
	// it with; an entry is keyed by the pattern's text and, where the text means
	// something else in a version 2 file (a lone '*'), that mode too.
	type key struct {
		upstream, subject string
		mode              glob.Mode
	}
	type entry struct {
		access SubjectAccess
		glob   glob.Glob
		mode   glob.Mode // glob.EffectiveMode
	}
	access := make(map[key]*entry)
	never := make(map[string][]string)
	for _, r := range p.rules {
		if r.deny {
			p.reviewDeny(rv, r)
			continue
		}
		if r.audit || expired(&r.matcher) {
			continue
		}
		for _, u := range r.upstream {
			if why := outOfBounds(&r.matcher, o.Upstreams[u.value].AttributeBounds, condBounds[u.value]); why != "" {
				never[u.value] = append(never[u.value], r.name+": "+why)
				continue
			}
			for i := range r.subjects {
				g := &r.subjects[i]
				if l := limits[u.value]; len(l) > 0 && len(effective(g, l)) == 0 {
					never[u.value] = append(never[u.value], r.name+": subject "+strconv.Quote(g.Pattern()))
					continue
				}
				k := key{u.value, g.Pattern(), g.EffectiveMode()}
				e := access[k]
				if e == nil {
					e = &entry{access: SubjectAccess{Subject: g.Pattern()}, glob: *g, mode: k.mode}
					access[k] = e
				}
				addAccess(&e.access, r)
			}
		}
	}
	byUpstream := make(map[string][]*entry)
	for k, e := range access {
		a := &e.access
		a.Audiences = sortedSet(a.Audiences)
		a.Resources = sortedSet(a.Resources)
		a.Scopes = sortedSet(a.Scopes)
		a.CopyAttributes = sortedSet(a.CopyAttributes)
		if a.Audiences == nil {
			a.Audiences = []string{}
		}
		if a.Scopes == nil {
			a.Scopes = []string{}
		}
		byUpstream[k.upstream] = append(byUpstream[k.upstream], e)
	}
	for u := range never {
		if _, ok := byUpstream[u]; !ok {
			byUpstream[u] = nil
		}
	}
	for _, u := range slices.Sorted(maps.Keys(byUpstream)) {
		entries := byUpstream[u]
		// By text, and the same text of a version 1 file before that of a
		// version 2 file (Legacy < Segments).
		slices.SortFunc(entries, func(a, b *entry) int {
			return cmp.Or(strings.Compare(a.access.Subject, b.access.Subject), cmp.Compare(a.mode, b.mode))
		})
		subjects := make([]SubjectAccess, len(entries))
		for i, e := range entries {
			subjects[i] = e.access
			eff := effectiveEntries(&e.glob, limits[u])
			if len(limits[u]) > 0 && (len(eff) > 1 || eff[0].text != subjects[i].Subject) {
				subjects[i].Effective = texts(eff)
			}
			subjects[i].Breadth = breadthOf(eff)
		}
		ul := o.Upstreams[u]
		rv.Upstreams = append(rv.Upstreams, UpstreamAccess{
			Upstream: u, AssertsOnly: o.UpstreamSubjects[u],
			Preset: ul.Preset, RequiredClaims: ul.RequiredClaims, AttributeBounds: ul.AttributeBounds, Condition: ul.Condition,
			Subjects: subjects, NeverAsserted: sortedSet(never[u]),
		})
	}

	for _, r := range p.admin {
		a := AdminAccess{
			Rule:            r.name,
			File:            r.file,
			Line:            r.line,
			Upstreams:       values(r.upstream),
			Subjects:        patterns(r.subjects),
			Actions:         slices.Clone(r.actions),
			WithinUpstreams: values(r.within),
			Conditions:      conditions("", &r.matcher),
		}
		if r.withinAll {
			a.WithinUpstreams = []string{AnyUpstream}
		}
		rv.Admin = append(rv.Admin, a)
	}

	// Findings.
	add := func(name, file string, line int, kind, severity, format string, args ...any) {
		rv.Findings = append(rv.Findings, Finding{Rule: name, File: file, Line: line, Kind: kind, Severity: severity, Message: fmt.Sprintf(format, args...)})
	}
	// sensitivities of the rules that grant, by file:line (filled in last).
	type at struct {
		file string
		line int
	}
	sensitivities := map[at]string{}
	lifecycle := func(name, file string, line int, m *matcher) {
		if usage != nil && usage[name] == 0 {
			add(name, file, line, FindingUnused, SeverityWarning, "no match recorded: remove the rule if nobody needs it")
		}
		if !m.reviewBy.IsZero() && !now.Before(m.reviewBy) {
			add(name, file, line, FindingReviewOverdue, SeverityWarning, "review was due on %s", formatDate(m.reviewBy))
		}
		if expired(m) {
			add(name, file, line, FindingExpired, SeverityInfo, "expired on %s and no longer matches: remove it from the file", formatDate(m.expires))
		}
		if m.owner == "" {
			add(name, file, line, FindingNoOwner, SeverityInfo, "names no owner")
		}
	}
	// unreachable reports each upstream of m whose limits none of m's subject
	// patterns can match, or whose attribute bounds exclude one of m's
	// attribute patterns.
	unreachable := func(name, file string, line int, m *matcher) {
		for _, u := range m.upstream {
			if l := limits[u.value]; len(l) > 0 && !slices.ContainsFunc(m.subjects, func(g glob.Glob) bool { return len(effective(&g, l)) > 0 }) {
				add(name, file, line, FindingUnreachable, SeverityWarning, "matches no subject upstream %s asserts (%s): it never applies there",
					u.value, strings.Join(quoteAll(o.UpstreamSubjects[u.value]), ", "))
			} else if why := outOfBounds(m, o.Upstreams[u.value].AttributeBounds, condBounds[u.value]); why != "" {
				add(name, file, line, FindingUnreachable, SeverityWarning, "%s of upstream %s: it never applies there", why, u.value)
			}
		}
	}
	// broad reports the first subject pattern of m that spans more than one
	// namespace, repository owner or SPIFFE path root within what one of its
	// upstreams asserts.
	broad := func(m *matcher) (string, bool) {
		for i := range m.subjects {
			g := &m.subjects[i]
			var spans []string
			where := map[string][]string{}
			for _, u := range m.upstream {
				l := limits[u.value]
				if len(l) > 0 && len(effective(g, l)) == 0 {
					continue
				}
				if b := breadthOf(effectiveEntries(g, l)); b != "" {
					if where[b] == nil {
						spans = append(spans, b)
					}
					where[b] = append(where[b], u.value)
				}
			}
			for i, b := range spans {
				spans[i] = b + " in " + strings.Join(where[b], ", ")
			}
			if len(spans) > 0 {
				return fmt.Sprintf("subject pattern %q %s", g.Pattern(), strings.Join(spans, "; ")), true
			}
		}
		return "", false
	}
	for _, r := range p.rules {
		sens := ""
		if !r.deny {
			sens = p.sensitivity(r)
			sensitivities[at{r.file, r.line}] = sens
		}
		lifecycle(r.name, r.file, r.line, &r.matcher)
		unreachable(r.name, r.file, r.line, &r.matcher)
		if r.audit {
			add(r.name, r.file, r.line, FindingAuditMode, SeverityInfo, "is in audit mode: it is evaluated and reported, never enforced")
		}
		if r.deny {
			continue
		}
		if msg, ok := broad(&r.matcher); ok {
			sev := SeverityWarning
			if narrowed(&r.matcher) {
				msg += " (narrowed by trust_domains, attributes or a condition)"
			}
			if s := p.sensitiveTargets(r); len(s) > 0 {
				sev = SeverityHigh
				msg += fmt.Sprintf(", and it grants sensitive targets %s", strings.Join(quoteAll(s), ", "))
			}
			add(r.name, r.file, r.line, FindingBroad, sev, "%s", msg)
		}
		if r.maxDepth > 1 {
			add(r.name, r.file, r.line, FindingDeepDelegation, SeverityWarning, "allows delegation chains of up to %d actors", r.maxDepth)
		}
		for _, u := range r.upstream {
			ul, ok := o.Upstreams[u.value]
			if ok && ul.Preset == "github_actions" && !githubPinned(&r.matcher, ul) {
				sev := SeverityWarning
				if sens == SensitivitySensitive {
					sev = SeverityHigh
				}
				add(r.name, r.file, r.line, FindingGitHubUnpinned, sev,
					"grants GitHub Actions tokens of upstream %s without pinning event_name, a protected ref (ref_protected: \"true\") or an environment: a pull_request_target or workflow_run run shares a push's sub and would be granted too (docs/presets.md)", u.value)
			}
		}
	}
	for _, r := range p.admin {
		sensitivities[at{r.file, r.line}] = SensitivitySensitive
		lifecycle(r.name, r.file, r.line, &r.matcher)
		unreachable(r.name, r.file, r.line, &r.matcher)
		if msg, ok := broad(&r.matcher); ok {
			add(r.name, r.file, r.line, FindingBroad, SeverityHigh, "%s, and gives it admin rights (%s)", msg, strings.Join(r.actions, ", "))
		}
	}
	p.crossingFindings(add)
	for i := range rv.Findings {
		f := &rv.Findings[i]
		f.Sensitivity = sensitivities[at{f.File, f.Line}]
	}
	order := make(map[string]int, len(p.files))
	for i, f := range p.files {
		if _, ok := order[f]; !ok {
			order[f] = i
		}
	}
	slices.SortStableFunc(rv.Findings, func(a, b Finding) int {
		return cmp.Or(severityRank[a.Severity]-severityRank[b.Severity], sensitivityRank[a.Sensitivity]-sensitivityRank[b.Sensitivity],
			order[a.File]-order[b.File], a.Line-b.Line, strings.Compare(a.Kind, b.Kind))
	})
	return rv
}

var (
	severityRank    = map[string]int{SeverityHigh: 0, SeverityWarning: 1, SeverityInfo: 2}
	sensitivityRank = map[string]int{SensitivitySensitive: 0, SensitivityElevated: 1, SensitivityNormal: 2, "": 3}
)

// sensitivity ranks what allow rule r grants (see SensitivitySensitive).
func (p *Policy) sensitivity(r *rule) string {
	if len(p.sensitiveTargets(r)) > 0 {
		return SensitivitySensitive
	}
	if r.maxTTL > time.Hour {
		return SensitivityElevated
	}
	for _, sc := range r.scopes {
		l := strings.ToLower(sc)
		if sc == "*" || strings.Contains(l, "write") || strings.Contains(l, "admin") || strings.Contains(l, "delete") || strings.Contains(l, "manage") {
			return SensitivityElevated
		}
	}
	return SensitivityNormal
}

// outOfBounds says why an upstream can never satisfy m: one of m's attribute
// patterns is disjoint from every pattern its attribute_bounds (bounds) or its
// condition (cond, conditionBounds) allow for that attribute. "" when it may.
func outOfBounds(m *matcher, bounds, cond map[string][]string) string {
	for _, src := range []struct {
		what   string
		bounds map[string][]string
	}{{"attribute_bounds", bounds}, {"the upstream's condition, which allows", cond}} {
		for _, a := range m.attributes {
			allowed := src.bounds[a.name]
			if len(allowed) == 0 {
				continue
			}
			// attribute_bounds and conditions are Legacy patterns (attest/attrs).
			if !slices.ContainsFunc(allowed, func(b string) bool { g := glob.Compile(b); return glob.Overlap(&a.pattern, &g) }) {
				return fmt.Sprintf("attribute %s=%q is outside %s %s", a.name, a.pattern.Pattern(), src.what, strings.Join(quoteAll(allowed), ", "))
			}
		}
	}
	return ""
}

// githubPins finds the GitHub attributes and claims that pin an event, a
// protected ref or an environment, as whole words (runner_environment is not
// environment).
var githubPins = regexp.MustCompile(`\b(event_name|ref_protected|environment)\b`)

// githubPinned reports whether m (with the upstream's own limits ul) pins
// event_name, a protected ref or an environment: an attribute pattern with a
// literal prefix for event_name or environment, ref_protected "true", a subject
// pattern whose literal prefix names an environment, or a `when`, upstream
// condition or required claim that reads one of them.
func githubPinned(m *matcher, ul UpstreamLimits) bool {
	for _, a := range m.attributes {
		switch a.name {
		case "event_name", "environment":
			if a.pattern.Literal() || a.pattern.Prefix() != "" {
				return true
			}
		case "ref_protected":
			if a.pattern.Pattern() == "true" {
				return true
			}
		}
	}
	if !slices.ContainsFunc(m.subjects, func(g glob.Glob) bool { return !strings.Contains(g.Prefix(), ":environment:") }) {
		return true
	}
	mentions := githubPins.MatchString
	if (m.when != nil && mentions(m.when.src)) || mentions(ul.Condition) {
		return true
	}
	for name := range ul.RequiredClaims {
		if mentions(name) {
			return true
		}
	}
	return false
}

func (p *Policy) reviewDeny(rv *Review, r *rule) {
	d := DenyRuleReview{
		Rule:       r.name,
		File:       r.file,
		Line:       r.line,
		Mode:       ModeEnforce,
		Upstreams:  values(r.upstream),
		Subjects:   patterns(r.subjects),
		Targets:    append(slices.Clone(r.audiences), r.resources...),
		Scopes:     slices.Clone(r.scopes),
		Conditions: conditions("", &r.matcher),
	}
	if r.audit {
		d.Mode = ModeAudit
	}
	if len(r.actors) > 0 {
		d.Conditions = append(d.Conditions, "delegated requests with actors "+describeActors(r.actors))
	}
	rv.DenyRules = append(rv.DenyRules, d)
}

// addAccess adds what allow rule r grants to a.
func addAccess(a *SubjectAccess, r *rule) {
	a.Rules = append(a.Rules, r.name)
	a.Audiences = append(a.Audiences, r.audiences...)
	a.Resources = append(a.Resources, r.resources...)
	a.Scopes = append(a.Scopes, r.scopes...)
	a.CopyAttributes = append(a.CopyAttributes, r.copyAttributes...)
	switch {
	case a.MaxTTL == "none":
	case r.maxTTL == 0:
		a.MaxTTL = "none"
	case a.MaxTTL == "":
		a.MaxTTL = r.maxTTL.String()
	default:
		if cur, err := time.ParseDuration(a.MaxTTL); err == nil && r.maxTTL > cur {
			a.MaxTTL = r.maxTTL.String()
		}
	}
	for _, x := range r.actors {
		a.Actors = append(a.Actors, ActorAccess{
			Rule:       r.name,
			Upstreams:  values(x.upstreams),
			Subjects:   patterns(x.subjects),
			Attributes: attrMap(x.attributes),
			MaxDepth:   r.maxDepth,
		})
	}
	a.Conditions = append(a.Conditions, conditions(r.name+": ", &r.matcher)...)
	if len(r.actors) > 0 {
		a.Conditions = append(a.Conditions, r.name+": delegated requests only")
	}
	if r.clients != nil {
		a.Conditions = append(a.Conditions, r.name+": authenticated clients "+strings.Join(patterns(r.clients), ", ")+" only")
	}
	if r.requireSender {
		a.Conditions = append(a.Conditions, r.name+": sender-constrained tokens only")
	}
}

// conditions describes what narrows a matcher beyond upstreams and subjects.
func conditions(prefix string, m *matcher) []string {
	var out []string
	if len(m.trustDomains) > 0 {
		out = append(out, prefix+"trust_domains "+strings.Join(m.trustDomains, ", "))
	}
	if len(m.attributes) > 0 {
		var parts []string
		for _, a := range m.attributes {
			parts = append(parts, a.name+"="+a.pattern.Pattern())
		}
		out = append(out, prefix+"attributes "+strings.Join(parts, ", "))
	}
	if m.when != nil {
		out = append(out, prefix+"when "+strings.Join(strings.Fields(m.when.src), " "))
	}
	if !m.expires.IsZero() {
		out = append(out, prefix+"expires "+formatDate(m.expires))
	}
	return out
}

func narrowed(m *matcher) bool {
	return len(m.trustDomains) > 0 || len(m.attributes) > 0 || m.when != nil
}

func describeActors(actors []actorSpec) string {
	var parts []string
	for _, a := range actors {
		s := strings.Join(values(a.upstreams), ",") + " " + strings.Join(patterns(a.subjects), ",")
		if len(a.attributes) > 0 {
			for _, at := range a.attributes {
				s += " " + at.name + "=" + at.pattern.Pattern()
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// effective is the breadth of subject pattern p within the patterns an upstream
// asserts, sorted: each upstream pattern p covers, p where an upstream pattern
// covers it, and "p within u" where they overlap otherwise. Empty when p
// matches nothing the upstream asserts. Each pattern is read in its own mode (a
// rule's in its file's, the upstream's Legacy as its verifier reads them);
// covering is glob's Covers (sound, if not complete), overlapping its Overlap
// (exact).
func effective(p *glob.Glob, asserts []glob.Glob) []string {
	return texts(effectiveEntries(p, asserts))
}

// effEntry is one part of an effective breadth: its text, and the pattern whose
// literal prefix bounds it (of an overlap, the longer prefix of the two).
type effEntry struct {
	text  string
	bound *glob.Glob
}

// effectiveEntries is effective with the bound of each entry; without asserts,
// p itself.
func effectiveEntries(p *glob.Glob, asserts []glob.Glob) []effEntry {
	if len(asserts) == 0 {
		return []effEntry{{p.Pattern(), p}}
	}
	var out []effEntry
	for i := range asserts {
		u := &asserts[i]
		switch {
		case p.Covers(u):
			out = append(out, effEntry{u.Pattern(), u})
		case u.Covers(p):
			out = append(out, effEntry{p.Pattern(), p})
		case glob.Overlap(p, u):
			b := p
			if len(u.Prefix()) > len(p.Prefix()) {
				b = u
			}
			out = append(out, effEntry{p.Pattern() + " within " + u.Pattern(), b})
		}
	}
	slices.SortFunc(out, func(a, b effEntry) int { return strings.Compare(a.text, b.text) })
	return slices.CompactFunc(out, func(a, b effEntry) bool { return a.text == b.text })
}

func texts(es []effEntry) []string {
	if len(es) == 0 {
		return nil
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.text
	}
	return out
}

// breadthOf says what the effective entries span when it is more than one
// workload root: "" when they stay within one namespace, repository owner or
// SPIFFE path root (see subjectRoot), else e.g. "has no literal prefix: it
// matches any subject" or "spans more than one namespace".
func breadthOf(es []effEntry) string {
	roots := map[string]bool{}
	kind := ""
	for _, e := range es {
		root, k, ok := subjectRoot(e.bound)
		if !ok {
			if k == "" {
				return "has no literal prefix: it matches any subject"
			}
			return "spans more than one " + k
		}
		roots[root] = true
		kind = k
	}
	if len(roots) > 1 {
		if kind == "" {
			kind = "subject prefix"
		}
		return fmt.Sprintf("spans more than one %s (%s)", kind, strings.Join(slices.Sorted(maps.Keys(roots)), ", "))
	}
	return ""
}

// subjectRoot is the root a pattern stays within, by the subject formats the
// STS knows, and the kind of root: for "system:serviceaccount:NS:SA" the
// namespace, for GitHub's "repo:OWNER/REPO:..." the owner, for
// "spiffe://TD/ROOT/..." the first path segment (the first two when it is "ns",
// the Kubernetes layout /ns/NS/sa/SA). ok is false when the literal prefix stops
// before the root is complete ("system:serviceaccount:*",
// "system:serviceaccount:pay*", "repo:*", "spiffe://td/ns/*"), or when there is
// no literal prefix at all (kind ""). A pattern of another format stays within
// its literal prefix.
func subjectRoot(g *glob.Glob) (root, kind string, ok bool) {
	if g.Literal() {
		// One subject: within its root whatever the format ("/" and ":" end the
		// text so that a root running to the end is complete).
		root, kind, _ = rootOf(g.Pattern(), g.Pattern()+"/:")
		if root == "" {
			root = g.Pattern()
		}
		return root, kind, true
	}
	return rootOf(g.Pattern(), g.Prefix())
}

// rootOf is subjectRoot of pattern pat with literal prefix prefix.
func rootOf(pat, prefix string) (root, kind string, ok bool) {
	const sa, repo, spiffe = "system:serviceaccount:", "repo:", "spiffe://"
	cut := func(s, sep string) (string, bool) {
		i := strings.Index(s, sep)
		if i < 0 {
			return "", false
		}
		return s[:i], true
	}
	if prefix == "" {
		return "", "", false
	}
	for _, k := range []struct{ scheme, kind string }{{sa, "namespace"}, {repo, "repository owner"}, {spiffe, "trust domain"}} {
		if len(prefix) < len(k.scheme) && strings.HasPrefix(k.scheme, prefix) {
			return "", k.kind, false // "system:service*" spans every namespace
		}
	}
	switch {
	case strings.HasPrefix(pat, sa) && strings.HasPrefix(prefix, sa):
		ns, ok := cut(prefix[len(sa):], ":")
		return ns, "namespace", ok
	case strings.HasPrefix(pat, repo) && strings.HasPrefix(prefix, repo):
		owner, ok := cut(prefix[len(repo):], "/")
		return owner, "repository owner", ok
	case strings.HasPrefix(pat, spiffe) && strings.HasPrefix(prefix, spiffe):
		rest := prefix[len(spiffe):]
		td, ok := cut(rest, "/")
		if !ok {
			return "", "trust domain", false
		}
		path := rest[len(td)+1:]
		first, ok := cut(path, "/")
		if !ok {
			return "", "SPIFFE path root", false
		}
		if first != "ns" {
			return td + "/" + first, "SPIFFE path root", true
		}
		ns, ok := cut(path[len(first)+1:], "/")
		return td + "/ns/" + ns, "SPIFFE path root", ok
	}
	return prefix, "", true
}

// sensitiveTargets returns the targets of r that match a sensitive_audiences
// pattern.
func (p *Policy) sensitiveTargets(r *rule) []string {
	var out []string
	for _, t := range append(slices.Clone(r.audiences), r.resources...) {
		for i := range p.sensitive {
			if p.sensitive[i].Match(t) {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

func sortedSet(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	l = slices.Clone(l)
	slices.Sort(l)
	return slices.Compact(l)
}

func quoteAll(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// formatDate prints a date as written (YYYY-MM-DD) when it is midnight UTC.
func formatDate(t time.Time) string {
	if t.Equal(t.Truncate(24*time.Hour)) && t.Location() == time.UTC {
		return t.Format(dateLayout)
	}
	return t.Format(dateTimeLayout)
}

// WriteText writes the review for people to read.
func (rv *Review) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Policy review as of %s\n", rv.AsOf.Format(dateTimeLayout))
	if rv.UsageKnown {
		b.WriteString("Usage: known (matches per rule, as counted by the server)\n")
	} else {
		b.WriteString("Usage: unknown (unused rules are not reported)\n")
	}

	b.WriteString("\nAccess by upstream and subject pattern\n")
	if len(rv.Upstreams) == 0 {
		b.WriteString("  (none: no enforced allow rule)\n")
	}
	for _, u := range rv.Upstreams {
		fmt.Fprintf(&b, "  upstream %s\n", u.Upstream)
		if len(u.AssertsOnly) > 0 {
			fmt.Fprintf(&b, "    (asserts only %s)\n", strings.Join(u.AssertsOnly, ", "))
		}
		if u.Preset != "" {
			fmt.Fprintf(&b, "    (preset %s)\n", u.Preset)
		}
		for _, k := range slices.Sorted(maps.Keys(u.RequiredClaims)) {
			fmt.Fprintf(&b, "    (requires claim %s = %s)\n", k, u.RequiredClaims[k])
		}
		for _, k := range slices.Sorted(maps.Keys(u.AttributeBounds)) {
			fmt.Fprintf(&b, "    (bounds attribute %s to %s)\n", k, strings.Join(u.AttributeBounds[k], ", "))
		}
		if u.Condition != "" {
			fmt.Fprintf(&b, "    (condition %s)\n", strings.Join(strings.Fields(u.Condition), " "))
		}
		for i, s := range u.Subjects {
			// The same text from files of both versions, where its '*' means
			// different things, is two entries: version 1's first.
			switch {
			case i+1 < len(u.Subjects) && u.Subjects[i+1].Subject == s.Subject:
				fmt.Fprintf(&b, "    %s (version %d)\n", s.Subject, VersionLegacy)
			case i > 0 && u.Subjects[i-1].Subject == s.Subject:
				fmt.Fprintf(&b, "    %s (version %d)\n", s.Subject, VersionSegments)
			default:
				fmt.Fprintf(&b, "    %s\n", s.Subject)
			}
			if len(s.Effective) > 0 {
				field(&b, "effective", strings.Join(s.Effective, ", "))
			}
			if s.Breadth != "" {
				field(&b, "breadth", s.Breadth)
			}
			field(&b, "audiences", list(s.Audiences, "-"))
			if len(s.Resources) > 0 {
				field(&b, "resources", list(s.Resources, "-"))
			}
			field(&b, "scopes", list(s.Scopes, "-"))
			field(&b, "max ttl", s.MaxTTL)
			if len(s.CopyAttributes) > 0 {
				field(&b, "copies", list(s.CopyAttributes, "-"))
			}
			for _, a := range s.Actors {
				v := fmt.Sprintf("%s %s", strings.Join(a.Upstreams, ","), strings.Join(a.Subjects, ","))
				for _, k := range slices.Sorted(maps.Keys(a.Attributes)) {
					v += " " + k + "=" + a.Attributes[k]
				}
				field(&b, "actor", fmt.Sprintf("%s (depth %d, rule %s)", v, a.MaxDepth, a.Rule))
			}
			for _, c := range s.Conditions {
				field(&b, "condition", c)
			}
			field(&b, "rules", strings.Join(s.Rules, ", "))
		}
		for _, n := range u.NeverAsserted {
			fmt.Fprintf(&b, "    never asserted (refused by the upstream): %s\n", n)
		}
	}

	b.WriteString("\nDeny rules\n")
	if len(rv.DenyRules) == 0 {
		b.WriteString("  (none)\n")
	}
	for _, d := range rv.DenyRules {
		mode := ""
		if d.Mode == ModeAudit {
			mode = ", audit mode"
		}
		fmt.Fprintf(&b, "  %s (%s:%d%s)\n", d.Rule, d.File, d.Line, mode)
		field(&b, "upstreams", strings.Join(d.Upstreams, ", "))
		field(&b, "subjects", strings.Join(d.Subjects, ", "))
		field(&b, "targets", list(d.Targets, "any"))
		field(&b, "scopes", list(d.Scopes, "any"))
		for _, c := range d.Conditions {
			field(&b, "condition", c)
		}
	}

	b.WriteString("\nAdmin rights\n")
	if len(rv.Admin) == 0 {
		b.WriteString("  (none)\n")
	}
	for _, a := range rv.Admin {
		fmt.Fprintf(&b, "  %s (%s:%d)\n", a.Rule, a.File, a.Line)
		field(&b, "upstreams", strings.Join(a.Upstreams, ", "))
		field(&b, "subjects", strings.Join(a.Subjects, ", "))
		field(&b, "actions", strings.Join(a.Actions, ", "))
		field(&b, "within", strings.Join(a.WithinUpstreams, ", "))
		for _, c := range a.Conditions {
			field(&b, "condition", c)
		}
	}

	fmt.Fprintf(&b, "\nFindings (%d)\n", len(rv.Findings))
	if len(rv.Findings) == 0 {
		b.WriteString("  (none)\n")
	}
	for _, f := range rv.Findings {
		sens := ""
		if f.Sensitivity != "" {
			sens = "[" + f.Sensitivity + "] "
		}
		fmt.Fprintf(&b, "  %-7s %-15s %s:%d %s %s%s\n", f.Severity, f.Kind, f.File, f.Line, f.Rule, sens, f.Message)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func field(b *strings.Builder, name, value string) {
	fmt.Fprintf(b, "      %-10s %s\n", name+":", value)
}

func list(l []string, empty string) string {
	if len(l) == 0 {
		return empty
	}
	return strings.Join(l, ", ")
}

// crossingFindings reports the allow and admin rules with a version 1 pattern
// (subject, actor subject, attribute value or client) whose '*' may match ':' or
// '/' (glob.Glob.CrossesSegments).
func (p *Policy) crossingFindings(add func(name, file string, line int, kind, severity, format string, args ...any)) {
	report := func(name, file string, line int, gs []glob.Glob) {
		var pats []string
		for i := range gs {
			if gs[i].CrossesSegments() && !slices.Contains(pats, gs[i].Pattern()) {
				pats = append(pats, gs[i].Pattern())
			}
		}
		if len(pats) > 0 {
			add(name, file, line, FindingCrossesSegments, SeverityWarning,
				"%s: '*' matches ':' and '/' too in a file without `version: %d`; set it, and write '**' where crossing is meant", strings.Join(quoteAll(pats), ", "), VersionSegments)
		}
	}
	for _, r := range p.rules {
		if r.deny {
			continue // a broader deny refuses more, never grants more
		}
		report(r.name, r.file, r.line, r.globs())
	}
	for _, r := range p.admin {
		report(r.name, r.file, r.line, r.matcher.globs())
	}
}

// globs returns the matcher's subject and attribute patterns.
func (m *matcher) globs() []glob.Glob {
	out := slices.Clone(m.subjects)
	for _, a := range m.attributes {
		out = append(out, a.pattern)
	}
	return out
}

// globs returns every pattern of the rule: the matcher's, its actors' and its
// clients'.
func (r *rule) globs() []glob.Glob {
	out := r.matcher.globs()
	for _, a := range r.actors {
		out = append(out, a.subjects...)
		for _, x := range a.attributes {
			out = append(out, x.pattern)
		}
	}
	return append(out, r.clients...)
}
