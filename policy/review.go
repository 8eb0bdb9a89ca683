package policy

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
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
	// Findings are in file and line order.
	Findings []Finding `json:"findings"`
}

// UpstreamAccess is what the workloads of one upstream can obtain.
type UpstreamAccess struct {
	Upstream string `json:"upstream"`
	// AssertsOnly are the subject patterns the upstream may assert at all (its
	// configured `subjects`, ReviewOptions.UpstreamSubjects); empty when unknown or
	// unlimited. No rule grants a subject outside them.
	AssertsOnly []string        `json:"asserts_only,omitempty"`
	Subjects    []SubjectAccess `json:"subjects"`
}

// SubjectAccess is what the workloads matching one subject pattern can obtain,
// over every rule that lists the pattern. Each list is sorted and without
// repeats.
type SubjectAccess struct {
	Subject string `json:"subject"`
	// Effective is the breadth of Subject within the upstream's AssertsOnly, when
	// it is narrower: the upstream patterns Subject covers, Subject itself where an
	// upstream pattern covers it, and "Subject within P" where they overlap
	// otherwise. Unreachable is set when Subject matches nothing the upstream
	// asserts: what it lists is granted to nobody.
	Effective   []string `json:"effective_subjects,omitempty"`
	Unreachable bool     `json:"unreachable,omitempty"`
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
	FindingBroad          = "broad"           // a subject pattern matches every subject of an upstream
	FindingAuditMode      = "audit_mode"      // the rule is in audit mode (a reminder)
	FindingDeepDelegation = "deep_delegation" // the rule allows delegation chains longer than one actor
	FindingUnreachable    = "unreachable"     // no subject pattern matches what an upstream of the rule asserts
	// FindingCrossesSegments: in a file without `version: 2`, a pattern of an
	// allow or admin rule has a '*' that also matches ':' and '/'.
	FindingCrossesSegments = "crosses_segments"
)

// Severities of a Finding.
const (
	SeverityInfo    = "info"
	SeverityWarning = "warning"
	SeverityHigh    = "high"
)

// Finding is something in the policy worth a look.
type Finding struct {
	Rule     string `json:"rule"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Kind     string `json:"kind"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
}

// ReviewOptions are what a review knows beyond the policy.
type ReviewOptions struct {
	// Usage counts the matches of each rule (and admin rule) by name, as the
	// server recorded them; nil when unknown, and no rule is reported unused.
	Usage map[string]uint64
	// UpstreamSubjects are, by upstream name, the subject patterns (as rule
	// subjects) each upstream may assert at all: its configured `subjects`, which
	// the upstream's verifier enforces before policy (for a SPIFFE upstream,
	// "spiffe://TRUST_DOMAIN/*" at least). A rule's subject pattern grants nothing
	// outside them: the review shows the effective breadth, notes the limit on
	// broad findings, and reports patterns that can match nothing (unreachable).
	// An upstream missing from the map may assert any subject.
	UpstreamSubjects map[string][]string
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
	limits := make(map[string][]glob.Glob, len(o.UpstreamSubjects))
	for u, l := range o.UpstreamSubjects {
		for _, pat := range l {
			limits[u] = append(limits[u], glob.Compile(pat))
		}
	}
	rv := &Review{
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

	// Access, from enforced, unexpired allow rules.
	type key struct{ upstream, subject string }
	access := make(map[key]*SubjectAccess)
	for _, r := range p.rules {
		if r.deny {
			p.reviewDeny(rv, r)
			continue
		}
		if r.audit || expired(&r.matcher) {
			continue
		}
		for _, u := range r.upstream {
			for _, pat := range patterns(r.subjects) {
				k := key{u.value, pat}
				a := access[k]
				if a == nil {
					a = &SubjectAccess{Subject: pat, MaxTTL: ""}
					access[k] = a
				}
				addAccess(a, r)
			}
		}
	}
	byUpstream := make(map[string][]SubjectAccess)
	for k, a := range access {
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
		byUpstream[k.upstream] = append(byUpstream[k.upstream], *a)
	}
	for _, u := range slices.Sorted(maps.Keys(byUpstream)) {
		subjects := byUpstream[u]
		slices.SortFunc(subjects, func(a, b SubjectAccess) int { return strings.Compare(a.Subject, b.Subject) })
		if l := limits[u]; len(l) > 0 {
			for i := range subjects {
				g := glob.Compile(subjects[i].Subject)
				if eff := effective(&g, l); len(eff) == 0 {
					subjects[i].Unreachable = true
				} else if len(eff) > 1 || eff[0] != subjects[i].Subject {
					subjects[i].Effective = eff
				}
			}
		}
		rv.Upstreams = append(rv.Upstreams, UpstreamAccess{Upstream: u, AssertsOnly: o.UpstreamSubjects[u], Subjects: subjects})
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
	// patterns can match.
	unreachable := func(name, file string, line int, m *matcher) {
		for _, u := range m.upstream {
			if l := limits[u.value]; len(l) > 0 && !slices.ContainsFunc(m.subjects, func(g glob.Glob) bool { return len(effective(&g, l)) > 0 }) {
				add(name, file, line, FindingUnreachable, SeverityWarning, "matches no subject upstream %s asserts (%s): it never applies there",
					u.value, strings.Join(quoteAll(o.UpstreamSubjects[u.value]), ", "))
			}
		}
	}
	for _, r := range p.rules {
		lifecycle(r.name, r.file, r.line, &r.matcher)
		unreachable(r.name, r.file, r.line, &r.matcher)
		if r.audit {
			add(r.name, r.file, r.line, FindingAuditMode, SeverityInfo, "is in audit mode: it is evaluated and reported, never enforced")
		}
		if !r.deny {
			if pat, ok := broadPattern(r.subjects); ok {
				sev, msg := SeverityWarning, broadMessage(pat, r.upstream, o.UpstreamSubjects)
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
		}
	}
	for _, r := range p.admin {
		lifecycle(r.name, r.file, r.line, &r.matcher)
		unreachable(r.name, r.file, r.line, &r.matcher)
		if pat, ok := broadPattern(r.subjects); ok {
			add(r.name, r.file, r.line, FindingBroad, SeverityHigh, "%s, and gives it admin rights (%s)", broadMessage(pat, r.upstream, o.UpstreamSubjects), strings.Join(r.actions, ", "))
		}
	}
	p.crossingFindings(add)
	order := make(map[string]int, len(p.files))
	for i, f := range p.files {
		if _, ok := order[f]; !ok {
			order[f] = i
		}
	}
	slices.SortStableFunc(rv.Findings, func(a, b Finding) int {
		return cmp.Or(order[a.File]-order[b.File], a.Line-b.Line, strings.Compare(a.Kind, b.Kind))
	})
	return rv
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

// broadMessage describes a broad pattern, and the limits of those upstreams that
// assert only some subjects.
func broadMessage(pattern string, upstreams []located, limits map[string][]string) string {
	where := "upstream " + upstreams[0].value
	if len(upstreams) > 1 {
		where = "upstreams " + strings.Join(values(upstreams), ", ")
	}
	msg := fmt.Sprintf("subject pattern %q has no literal prefix: it matches workloads anywhere in %s", pattern, where)
	if pattern == "*" {
		msg = fmt.Sprintf("subject pattern \"*\" matches every workload of %s", where)
	}
	var notes []string
	for _, u := range upstreams {
		if l := limits[u.value]; len(l) > 0 {
			notes = append(notes, fmt.Sprintf("%s asserts only %s", u.value, strings.Join(quoteAll(l), ", ")))
		}
	}
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, "; ") + ")"
	}
	return msg
}

// effective is the breadth of subject pattern p within the patterns an upstream
// asserts, sorted: each upstream pattern p covers, p where an upstream pattern
// covers it, and "p within u" where they may overlap otherwise. Empty when p
// matches nothing the upstream asserts. A pattern covers another when it matches
// that pattern's text: its literal segments never match a '*', so each of the
// other's stars falls within one of its own (sound, if not complete).
func effective(p *glob.Glob, asserts []glob.Glob) []string {
	var out []string
	for i := range asserts {
		u := &asserts[i]
		switch {
		case p.Match(u.Pattern()):
			out = append(out, u.Pattern())
		case u.Match(p.Pattern()):
			out = append(out, p.Pattern())
		case !disjoint(p, u):
			out = append(out, p.Pattern()+" within "+u.Pattern())
		}
	}
	return sortedSet(out)
}

// disjoint reports that no subject matches both a and b: a literal one does not
// match the other, or their literal prefixes or suffixes differ. False when unsure.
func disjoint(a, b *glob.Glob) bool {
	switch {
	case a.Literal():
		return !b.Match(a.Pattern())
	case b.Literal():
		return !a.Match(b.Pattern())
	}
	pa, pb := a.Prefix(), b.Prefix()
	sa, sb := suffix(a), suffix(b)
	return !strings.HasPrefix(pa, pb) && !strings.HasPrefix(pb, pa) ||
		!strings.HasSuffix(sa, sb) && !strings.HasSuffix(sb, sa)
}

// suffix is the literal text after the last '*' of a pattern that has one.
func suffix(g *glob.Glob) string {
	p := g.Pattern()
	return p[strings.LastIndexByte(p, '*')+1:]
}

// broadPattern returns the first subject pattern with no literal prefix: it
// matches any subject (that ends or contains what it says).
func broadPattern(subjects []glob.Glob) (string, bool) {
	for i := range subjects {
		if !subjects[i].Literal() && subjects[i].Prefix() == "" {
			return subjects[i].Pattern(), true
		}
	}
	return "", false
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
		for _, s := range u.Subjects {
			fmt.Fprintf(&b, "    %s\n", s.Subject)
			switch {
			case s.Unreachable:
				field(&b, "effective", "none: the upstream asserts no subject it matches")
			case len(s.Effective) > 0:
				field(&b, "effective", strings.Join(s.Effective, ", "))
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
		fmt.Fprintf(&b, "  %-7s %-15s %s:%d %s %s\n", f.Severity, f.Kind, f.File, f.Line, f.Rule, f.Message)
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
