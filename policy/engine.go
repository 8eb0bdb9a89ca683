package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/safeconduct/safeconduct/attest"
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

// Decide answers req. It is pure (no I/O, no clock, no randomness: the time is
// req.Now) and safe for concurrent use. See the package documentation for the
// semantics.
//
// On the allow path Decide does not allocate unless the request holds both
// audiences and resources or repeats a value, a condition runs, or an audit rule
// matches. The Audiences, Scopes and CopyAttributes of the Decision may share
// backing arrays with the Request's slices or the rule (capped, so an append
// copies): treat them as read-only.
func (p *Policy) Decide(req Request) Decision {
	return p.decide(&req, nil)
}

// Explain answers req as Decide does, and fills Decision.Trace with every rule of
// the workload's upstream, in the order they are evaluated (enforced deny rules,
// then enforced allow rules, then audit rules, each group in file order), with its
// verdict. It evaluates every rule of the upstream, not only those up to the one
// that decides, so it is slower than Decide: use it for `stsctl policy test` and
// investigations, not on the hot path.
func (p *Policy) Explain(req Request) Decision {
	var t tracer
	d := p.decide(&req, &t)
	d.Trace = t.steps
	if d.Trace == nil {
		d.Trace = []TraceStep{}
	}
	return d
}

// tracer collects the steps of Explain; a nil *tracer collects nothing.
type tracer struct {
	steps []TraceStep
}

func (t *tracer) add(s TraceStep) {
	if t != nil {
		t.steps = append(t.steps, s)
	}
}

// refuse builds a refusal made before any rule (and its trace step).
func (t *tracer) refuse(o Outcome, reason string) Decision {
	t.add(TraceStep{Verdict: VerdictRequest, Decided: true, Detail: reason})
	return Decision{Outcome: o, Reason: reason}
}

func (p *Policy) decide(req *Request, t *tracer) Decision {
	if d, refused := checkRequest(p, req, t); refused {
		return d
	}
	w := req.Workload
	c := evalCtx{
		req:     *req,
		targets: joinUnique(req.Audiences, req.Resources),
		scopes:  joinUnique(req.Scopes, nil),
	}
	ix := p.index[w.Upstream]
	if ix == nil {
		reason := noRuleReason(w)
		t.add(TraceStep{Verdict: VerdictRefused, Decided: true, Detail: reason + " (the upstream has no rules)"})
		return Decision{Outcome: DenyNoRule, Reason: reason}
	}
	var cands []*rule
	pruned := false // cands leaves out rules whose condition is false
	if t != nil || p.bruteForce {
		cands = ix.all
	} else {
		var buf [16]*rule
		cands = ix.candidates(w, false, buf[:0])
		pruned = true
	}
	c.bruteForce = p.bruteForce

	// Deny rules first: an explicit deny beats any allow, wherever it is written.
	d, decided := firstDeny(cands, &c, t)
	// Then the first allow rule that grants the whole request by itself. Targets
	// and scopes granted by different rules are never combined.
	if a, granted := firstAllow(cands, &c, t, decided); granted {
		d, decided = a, true
	}
	if !decided {
		all := cands
		if pruned {
			// The refusal names the nearest rule, which may be one whose
			// condition is false: look at every rule the subject may match.
			// (Audit rules left out of cands cannot apply: they stay out.)
			all = ix.candidates(w, true, nil)
		}
		d = refusal(all, &c)
	}
	// Audit rules never change the outcome; they report what they would do.
	d.Audited = auditHits(cands, &c, t, d.Outcome)
	if !decided {
		// No single rule decided the refusal: say why at the end.
		t.add(TraceStep{Verdict: VerdictRefused, Decided: true, Detail: d.Reason})
	}
	return d
}

// checkRequest refuses, before any rule is looked at, a request that no rule
// may be asked about: no policy, no workload, no time, no or too many targets,
// too many scopes, an inconsistent delegation, or an actor the subject token
// does not allow (may_act).
func checkRequest(p *Policy, req *Request, t *tracer) (Decision, bool) {
	w := req.Workload
	switch {
	case p == nil:
		return t.refuse(DenyNoRule, "no policy is loaded"), true
	case w == nil:
		return t.refuse(DenyNoRule, "the request has no attested workload"), true
	case w.Upstream == "" || w.Subject == "":
		return t.refuse(DenyRequest, "the workload has no upstream or no subject"), true
	case req.Now.IsZero():
		return t.refuse(DenyRequest, "the request has no time (Request.Now is zero)"), true
	}
	n := len(req.Audiences) + len(req.Resources)
	switch {
	case n == 0:
		return t.refuse(DenyTarget, "no audience or resource requested"), true
	case n > MaxTargets:
		return t.refuse(DenyTarget, fmt.Sprintf("%d targets requested, more than the %d allowed", n, MaxTargets)), true
	case len(req.Scopes) > MaxScopes:
		return t.refuse(DenyScope, fmt.Sprintf("%d scopes requested, more than the %d allowed", len(req.Scopes), MaxScopes)), true
	}
	return checkDelegation(req, t)
}

// checkDelegation is checkRequest's part for the actor and delegation depth.
func checkDelegation(req *Request, t *tracer) (Decision, bool) {
	if req.Actor == nil {
		if req.DelegationDepth != 0 {
			return t.refuse(DenyRequest, fmt.Sprintf("delegation depth %d without an actor", req.DelegationDepth)), true
		}
		return Decision{}, false
	}
	if req.Actor.Upstream == "" || req.Actor.Subject == "" {
		return t.refuse(DenyRequest, "the actor has no upstream or no subject"), true
	}
	if req.DelegationDepth < 1 {
		return t.refuse(DenyRequest, fmt.Sprintf("an actor with delegation depth %d (at least 1)", req.DelegationDepth)), true
	}
	if reason := checkMayAct(req.Workload, req.Actor); reason != "" {
		t.add(TraceStep{Verdict: VerdictMayAct, Decided: true, Detail: reason})
		return Decision{Outcome: DenyActor, Reason: reason}, true
	}
	return Decision{}, false
}

// firstDeny evaluates the enforced deny rules among cands and returns the
// decision of the first that applies. With a tracer it evaluates them all.
func firstDeny(cands []*rule, c *evalCtx, t *tracer) (Decision, bool) {
	var d Decision
	decided := false
	for _, r := range cands {
		if !r.deny || r.audit {
			continue
		}
		res := r.evalDeny(c)
		applies := res.v == vApplies
		t.step(r, c, res, applies && !decided)
		if applies && !decided {
			d, decided = denyRule(r, c.req.Workload, res), true
			if t == nil {
				break
			}
		}
	}
	return d, decided
}

// firstAllow evaluates the enforced allow rules among cands and returns the
// grant of the first that grants the whole request. With denied set (a deny
// rule decided) no allow rule decides: without a tracer none is evaluated, with
// one they all are, for the trace.
func firstAllow(cands []*rule, c *evalCtx, t *tracer, denied bool) (Decision, bool) {
	var d Decision
	decided := denied
	granted := false
	for _, r := range cands {
		if r.deny || r.audit {
			continue
		}
		if decided && t == nil {
			break
		}
		res := r.evalAllow(c)
		applies := res.v == vApplies
		t.step(r, c, res, applies && !decided)
		if applies && !decided {
			d, decided, granted = grant(r, c), true, true
		}
	}
	return d, granted
}

// auditHits evaluates the audit rules among cands: what each would have done to
// a request whose outcome is outcome.
func auditHits(cands []*rule, c *evalCtx, t *tracer, outcome Outcome) []AuditHit {
	var hits []AuditHit
	for _, r := range cands {
		if !r.audit {
			continue
		}
		var res ruleResult
		if r.deny {
			res = r.evalDeny(c)
		} else {
			res = r.evalAllow(c)
		}
		t.step(r, c, res, false)
		if res.v != vApplies {
			continue
		}
		hit := AuditHit{Rule: r.name, Effect: EffectDeny, Would: DenyRule.String()}
		if !r.deny {
			hit.Effect = EffectAllow
			if outcome != DenyRule {
				hit.Would = Allow.String()
			}
		}
		hits = append(hits, hit)
	}
	return hits
}

// evalCtx is one decision's view of the request.
type evalCtx struct {
	// req is a copy: the escape analysis does not tell fields apart, and a
	// pointer here would move every Decide's Request to the heap, since the
	// condition variables do escape.
	req Request
	// targets are the requested audiences then resources, scopes the requested
	// scopes, each without repeats.
	targets []string
	scopes  []string
	// vars binds the variables of conditions; built when the first one runs.
	vars *celVars
	// bruteForce: run every condition, without the equality-term shortcut, and
	// explain a refusal from every rule (no early exit).
	bruteForce bool
}

// whenFalse reports whether r's condition is false for this request by one of
// its equality terms, without running it.
func (c *evalCtx) whenFalse(r *rule) bool {
	return !c.bruteForce && len(r.when.terms) > 0 && definitelyFalse(r.when.terms, c.req.Workload)
}

func (c *evalCtx) celVars() *celVars {
	if c.vars == nil {
		c.vars = newRuleVars(&c.req)
	}
	return c.vars
}

// verdict is the internal form of a TraceStep's Verdict.
type verdict uint8

const (
	vApplies verdict = iota
	vSubject
	vExpired
	vTrustDomain
	vAttribute
	vDelegatedOnly
	vNoDelegation
	vActor
	vDepth
	vWhenFalse
	vWhenError
	vTarget
	vScope
	vClient
	vSender
	// admin rules
	vAction
	vTargetUpstream
)

var verdictNames = [...]string{
	vApplies:        VerdictApplies,
	vSubject:        VerdictSubject,
	vExpired:        VerdictExpired,
	vTrustDomain:    VerdictTrustDomain,
	vAttribute:      VerdictAttribute,
	vDelegatedOnly:  VerdictDelegatedOnly,
	vNoDelegation:   VerdictNoDelegation,
	vActor:          VerdictActor,
	vDepth:          VerdictDepth,
	vWhenFalse:      VerdictWhenFalse,
	vWhenError:      VerdictWhenError,
	vTarget:         VerdictTarget,
	vScope:          VerdictScope,
	vClient:         VerdictClient,
	vSender:         VerdictSenderConstraint,
	vAction:         VerdictAction,
	vTargetUpstream: VerdictTargetUpstream,
}

func (v verdict) String() string { return verdictNames[v] }

// Stages of an allow rule's checks, in the order they run and a refusal is
// explained: a rule that gets further is nearer to granting, and the first rule
// that got furthest explains a refusal. The condition runs last, so a rule that
// cannot grant costs no evaluation, and a rule refused by its condition is one
// that grants everything else requested.
const (
	stageSubject  = iota // the subject does not match
	stageWorkload        // expiry, trust domain, attributes, or an actor on a direct-only request
	stageActor           // the delegation is not allowed
	stageTarget          // a target is not granted
	stageScope           // a scope is not granted
	stageClient          // the client is not authenticated, or not one the rule lists
	stageSender          // the token would not be sender-constrained
	stageWhen            // the condition is false or failed
	stageApplies
)

func (v verdict) stage() int {
	switch v {
	case vSubject:
		return stageSubject
	case vExpired, vTrustDomain, vAttribute, vDelegatedOnly:
		return stageWorkload
	case vNoDelegation, vActor, vDepth:
		return stageActor
	case vTarget:
		return stageTarget
	case vScope:
		return stageScope
	case vClient:
		return stageClient
	case vSender:
		return stageSender
	case vWhenFalse, vWhenError:
		return stageWhen
	default:
		return stageApplies
	}
}

// ruleResult is the verdict of one rule on one request.
type ruleResult struct {
	v verdict
	// what is the attribute, target or scope the verdict is about, if any.
	what string
	// err is the condition's evaluation error (vWhenError, or a deny rule that
	// applies because its condition failed).
	err error
	// target and scope are, for a deny rule that applies, the requested target and
	// scope it covers ("" when it covers any).
	target, scope string
}

// matchWorkload runs the checks of a rule on the workload alone: subject, expiry,
// trust domain, attributes.
func (m *matcher) matchWorkload(w *attest.Workload, now time.Time) ruleResult {
	if !matchSubjects(m.subjects, w.Subject) {
		return ruleResult{v: vSubject}
	}
	if !m.expires.IsZero() && !now.Before(m.expires) {
		return ruleResult{v: vExpired}
	}
	if len(m.trustDomains) > 0 && !matchTrustDomain(m.trustDomains, w) {
		return ruleResult{v: vTrustDomain}
	}
	if i := matchAttributes(m.attributes, w); i >= 0 {
		return ruleResult{v: vAttribute, what: m.attributes[i].name}
	}
	return ruleResult{v: vApplies}
}

// workloadDetail says in words why the workload checks failed.
func (m *matcher) workloadDetail(w *attest.Workload, res ruleResult) string {
	switch res.v {
	case vSubject:
		return fmt.Sprintf("no subject pattern matches %q", w.Subject)
	case vExpired:
		return fmt.Sprintf("the rule expired at %s", m.expires.Format(dateTimeLayout))
	case vTrustDomain:
		if td, ok := w.Attributes[TrustDomainAttribute]; ok {
			return fmt.Sprintf("trust domain %q is not listed", td)
		}
		return "the workload has no trust_domain attribute"
	case vAttribute:
		for _, a := range m.attributes {
			if a.name != res.what {
				continue
			}
			if v, ok := w.Attributes[a.name]; ok {
				return fmt.Sprintf("attribute %q is %q, which does not match %q", a.name, v, a.pattern.Pattern())
			}
			return fmt.Sprintf("the workload has no attribute %q", a.name)
		}
	}
	return res.v.String()
}

// matchActor checks the delegation against the rule's actors.
func (r *rule) matchActor(c *evalCtx) ruleResult {
	a := c.req.Actor
	if a == nil {
		if len(r.actors) > 0 {
			return ruleResult{v: vDelegatedOnly}
		}
		return ruleResult{v: vApplies}
	}
	if len(r.actors) == 0 {
		// An allow rule without actors never allows a delegation; a deny rule
		// without actors applies whoever acts.
		if r.deny {
			return ruleResult{v: vApplies}
		}
		return ruleResult{v: vNoDelegation}
	}
	ok := false
	for i := range r.actors {
		if r.actors[i].matches(a) {
			ok = true
			break
		}
	}
	if !ok {
		return ruleResult{v: vActor}
	}
	if !r.deny && c.req.DelegationDepth > r.maxDepth {
		return ruleResult{v: vDepth}
	}
	return ruleResult{v: vApplies}
}

// evalWhen runs the rule's condition, if it has one.
func (r *rule) evalWhen(c *evalCtx) ruleResult {
	if r.when == nil {
		return ruleResult{v: vApplies}
	}
	if c.whenFalse(r) {
		return ruleResult{v: vWhenFalse}
	}
	return whenResult(r.when.eval(c.celVars()))
}

func whenResult(ok bool, err error) ruleResult {
	switch {
	case err != nil:
		return ruleResult{v: vWhenError, err: err}
	case !ok:
		return ruleResult{v: vWhenFalse}
	}
	return ruleResult{v: vApplies}
}

// evalAllow checks whether allow rule r grants the whole request, in stage order.
func (r *rule) evalAllow(c *evalCtx) ruleResult {
	if res := r.matchWorkload(c.req.Workload, c.req.Now); res.v != vApplies {
		return res
	}
	if res := r.matchActor(c); res.v != vApplies {
		return res
	}
	if res := r.checkGrant(c); res.v != vApplies {
		return res
	}
	return r.evalWhen(c)
}

// resourceSetFor is the set requested resources are checked against.
func (r *rule) resourceSetFor() *stringSet {
	if r.hasResources {
		return &r.resourceSet
	}
	return &r.audienceSet
}

func (r *rule) grantsAudience(a string) bool { return r.audienceSet.has(a) }
func (r *rule) grantsResource(x string) bool { return r.resourceSetFor().has(x) }

// checkGrant checks that r grants every requested target and scope, and the
// sender constraint.
func (r *rule) checkGrant(c *evalCtx) ruleResult {
	for _, a := range c.req.Audiences {
		if !r.audienceSet.has(a) {
			return ruleResult{v: vTarget, what: a}
		}
	}
	rs := r.resourceSetFor()
	for _, x := range c.req.Resources {
		if !rs.has(x) {
			return ruleResult{v: vTarget, what: x}
		}
	}
	for _, s := range c.scopes {
		if !r.scopeSet.has(s) {
			return ruleResult{v: vScope, what: s}
		}
	}
	if r.clients != nil && !r.grantsClient(&c.req) {
		return ruleResult{v: vClient}
	}
	if r.requireSender && !c.req.SenderConstrained {
		return ruleResult{v: vSender}
	}
	return ruleResult{v: vApplies}
}

// grantsClient reports whether the request comes from an authenticated client
// the rule lists.
func (r *rule) grantsClient(req *Request) bool {
	if !req.ClientAuthenticated || req.ClientID == "" {
		return false
	}
	for _, g := range r.clients {
		if g.Match(req.ClientID) {
			return true
		}
	}
	return false
}

// evalDeny checks whether deny rule r applies. Its condition runs last; when it
// fails to evaluate, the rule applies (fail closed).
func (r *rule) evalDeny(c *evalCtx) ruleResult {
	if res := r.matchWorkload(c.req.Workload, c.req.Now); res.v != vApplies {
		return res
	}
	if res := r.matchActor(c); res.v != vApplies {
		return res
	}
	var out ruleResult
	if len(r.audiences) > 0 || r.hasResources {
		t, ok := r.coveredTarget(c)
		if !ok {
			return ruleResult{v: vTarget}
		}
		out.target = t
	}
	if len(r.scopes) > 0 {
		i := firstPresent(&r.scopeSet, c.scopes)
		if i < 0 {
			return ruleResult{v: vScope}
		}
		out.scope = c.scopes[i]
	}
	if r.when != nil {
		if c.whenFalse(r) {
			return ruleResult{v: vWhenFalse}
		}
		ok, err := r.when.eval(c.celVars())
		if err == nil && !ok {
			return ruleResult{v: vWhenFalse}
		}
		out.err = err
	}
	return out
}

// coveredTarget returns the first requested target deny rule r lists.
func (r *rule) coveredTarget(c *evalCtx) (string, bool) {
	for _, a := range c.req.Audiences {
		if r.audienceSet.has(a) {
			return a, true
		}
	}
	rs := r.resourceSetFor()
	for _, x := range c.req.Resources {
		if rs.has(x) {
			return x, true
		}
	}
	return "", false
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

// checkMayAct honours the subject token's may_act claim (RFC 8693 §4.4): when
// present, the actor must be the one it names (its ID the claim's sub, and its
// Issuer the claim's iss when given); a malformed claim refuses. It returns why
// not, or "".
func checkMayAct(w, actor *attest.Workload) string {
	m, ok, err := w.MayAct()
	switch {
	case !ok:
		return ""
	case err != nil:
		return "the subject token's may_act claim is malformed: " + oneLine(err.Error())
	case actor.ID != m.Subject:
		return fmt.Sprintf("the subject token's may_act names %q, not the actor %q", m.Subject, actor.ID)
	case m.Issuer != "" && actor.Issuer != m.Issuer:
		return fmt.Sprintf("the subject token's may_act names issuer %q, not the actor's %q", m.Issuer, actor.Issuer)
	}
	return ""
}

// grant builds the Allow of rule r.
func grant(r *rule, c *evalCtx) Decision {
	return Decision{
		Outcome:                 Allow,
		Rule:                    r.name,
		Reason:                  r.allowReason,
		Audiences:               c.targets,
		Scopes:                  c.scopes,
		MaxTTL:                  r.maxTTL,
		CopyAttributes:          r.copyAttributes,
		RequireSenderConstraint: r.requireSender,
	}
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

func noRuleReason(w *attest.Workload) string {
	return fmt.Sprintf("no rule matches upstream %q subject %q", w.Upstream, w.Subject)
}

// denyRule builds the decision of deny rule r.
func denyRule(r *rule, w *attest.Workload, res ruleResult) Decision {
	var b strings.Builder
	fmt.Fprintf(&b, "deny rule %q refuses upstream %q subject %q", r.name, w.Upstream, w.Subject)
	if res.target != "" {
		fmt.Fprintf(&b, " for target %q", res.target)
	}
	if res.scope != "" {
		fmt.Fprintf(&b, " with scope %q", res.scope)
	}
	if res.err != nil {
		fmt.Fprintf(&b, " because its condition failed to evaluate (%s)", oneLine(res.err.Error()))
	}
	return Decision{Outcome: DenyRule, Rule: r.name, Reason: b.String()}
}

// oneLine keeps a message on one line and short, so a Reason stays one sentence
// and cannot forge log lines.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const limit = 300
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// refusal says why no allow rule grants the request. The outcome comes from the
// rules that got furthest (see the stages), so a workload some rule matches is
// refused for its target or scope, as before conditions existed. The reason names
// the nearest rule, preferring one that grants the requested targets: that is the
// rule the caller most likely meant.
func refusal(cands []*rule, c *evalCtx) Decision {
	w := c.req.Workload
	var results []ruleOutcome
	best := stageSubject
	for _, r := range cands {
		if r.deny || r.audit {
			continue
		}
		res := r.evalAllow(c)
		if res.v.stage() == stageWhen && !c.bruteForce {
			// No enforced allow rule applies (or there would be no refusal), so
			// no rule gets further than its condition: the first one that gets
			// that far is the furthest, and grants every requested target, so it
			// is the nearest rule too. The rules after it change nothing.
			return whenRefusal(r, c, res)
		}
		best = max(best, res.v.stage())
		results = append(results, ruleOutcome{r, res})
	}
	st := stages{results: results}
	st.hint, st.hasHint = nearestGranting(results, c)
	hint, hasHint, nearest, from := st.hint, st.hasHint, st.nearest, st.from
	switch best {
	case stageSubject:
		return Decision{Outcome: DenyNoRule, Reason: noRuleReason(w)}
	case stageWorkload:
		x := nearest(stageWorkload)
		return Decision{Outcome: DenyNoRule, Reason: fmt.Sprintf("%s (nearest: rule %q: %s)", noRuleReason(w), x.r.name, x.r.detail(c, x.ruleResult))}
	case stageActor:
		x := nearest(stageActor)
		return Decision{Outcome: DenyActor, Reason: fmt.Sprintf("delegation refused: rule %q: %s", x.r.name, x.r.detail(c, x.ruleResult))}
	case stageTarget:
		if hasHint && hint.v.stage() == stageActor {
			// The rule for these targets refuses the delegation: a delegation
			// refusal, whatever other rules accept the actor for.
			return Decision{Outcome: DenyActor, Reason: fmt.Sprintf("delegation refused: rule %q: %s", hint.r.name, hint.r.detail(c, hint.ruleResult))}
		}
		d := explainTargets(from(stageTarget), c)
		if hasHint {
			d.Reason += fmt.Sprintf(" (rule %q lists it, but %s)", hint.r.name, hint.r.detail(c, hint.ruleResult))
		}
		return d
	case stageScope:
		return explainScopes(from(stageScope), c)
	case stageClient:
		x := nearest(stageClient)
		return Decision{Outcome: DenyClient, Reason: fmt.Sprintf("rule %q %s", x.r.name, x.r.detail(c, x.ruleResult))}
	case stageSender:
		x := nearest(stageSender)
		return Decision{Outcome: DenySenderConstraint, Reason: fmt.Sprintf(
			"rule %q grants the request only as a sender-constrained token, and this one would not be (the request is not over mTLS)", x.r.name)}
	default:
		x := nearest(stageWhen)
		return whenRefusal(x.r, c, x.ruleResult)
	}
}

// stages are the verdicts of the enforced allow rules of a refusal: hint is the
// first rule that grants every requested target and got furthest (when hasHint).
type stages struct {
	results []ruleOutcome
	hint    ruleOutcome
	hasHint bool
}

// nearest is the first rule at stage, or the hint when it is at stage.
func (s *stages) nearest(stage int) ruleOutcome {
	if s.hasHint && s.hint.v.stage() == stage {
		return s.hint
	}
	for _, x := range s.results {
		if x.v.stage() == stage {
			return x
		}
	}
	panic("policy: no rule at the best stage")
}

// from returns the rules that got to stage or beyond.
func (s *stages) from(stage int) []*rule {
	var out []*rule
	for _, x := range s.results {
		if x.v.stage() >= stage {
			out = append(out, x.r)
		}
	}
	return out
}

// whenRefusal is the refusal of a request that rule r would grant but for its
// condition.
func whenRefusal(r *rule, c *evalCtx, res ruleResult) Decision {
	return Decision{Outcome: DenyNoRule, Reason: fmt.Sprintf("rule %q grants every requested target and scope, but %s", r.name, r.detail(c, res))}
}

// ruleOutcome is a rule with its verdict.
type ruleOutcome struct {
	r *rule
	ruleResult
}

// nearestGranting returns, among the rules whose subject matches and that grant
// every requested target, the first of those that got furthest.
func nearestGranting(results []ruleOutcome, c *evalCtx) (ruleOutcome, bool) {
	best := -1
	for i, x := range results {
		if x.v.stage() == stageSubject || !x.r.grantsTargets(c) {
			continue
		}
		if best < 0 || x.v.stage() > results[best].v.stage() {
			best = i
		}
	}
	if best < 0 {
		return ruleOutcome{}, false
	}
	return results[best], true
}

// grantsTargets reports whether r grants every requested target.
func (r *rule) grantsTargets(c *evalCtx) bool {
	for _, a := range c.req.Audiences {
		if !r.grantsAudience(a) {
			return false
		}
	}
	for _, x := range c.req.Resources {
		if !r.grantsResource(x) {
			return false
		}
	}
	return true
}

// explainTargets explains a DenyTarget from the rules that match the workload.
func explainTargets(matching []*rule, c *evalCtx) Decision {
	// A target no matching rule grants at all is the clearest answer.
	for _, a := range c.req.Audiences {
		if !anyRule(matching, func(r *rule) bool { return r.grantsAudience(a) }) {
			return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf("no rule grants target %q to this workload", a)}
		}
	}
	for _, x := range c.req.Resources {
		if !anyRule(matching, func(r *rule) bool { return r.grantsResource(x) }) {
			return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf("no rule grants target %q to this workload", x)}
		}
	}
	r := matching[0]
	res := r.checkGrant(c)
	return Decision{Outcome: DenyTarget, Reason: fmt.Sprintf(
		"no single rule grants every requested target (rule %q refuses target %q), and targets of different rules are never combined", r.name, res.what)}
}

// explainScopes explains a DenyScope from the rules that grant every target.
func explainScopes(granting []*rule, c *evalCtx) Decision {
	for _, s := range c.scopes {
		if !anyRule(granting, func(r *rule) bool { return r.scopeSet.has(s) }) {
			return Decision{Outcome: DenyScope, Reason: fmt.Sprintf("no rule granting the requested targets grants scope %q", s)}
		}
	}
	r := granting[0]
	res := r.checkGrant(c)
	return Decision{Outcome: DenyScope, Reason: fmt.Sprintf(
		"no single rule grants the requested targets with every requested scope (rule %q refuses scope %q), and scopes of different rules are never combined", r.name, res.what)}
}

func anyRule(rules []*rule, f func(*rule) bool) bool {
	for _, r := range rules {
		if f(r) {
			return true
		}
	}
	return false
}

// step records rule r's verdict in the trace.
func (t *tracer) step(r *rule, c *evalCtx, res ruleResult, decided bool) {
	if t == nil {
		return
	}
	s := TraceStep{Rule: r.name, Effect: EffectAllow, Mode: ModeEnforce, Verdict: res.v.String(), Decided: decided, Detail: r.detail(c, res)}
	if r.deny {
		s.Effect = EffectDeny
	}
	if r.audit {
		s.Mode = ModeAudit
	}
	t.add(s)
}

// detail says in words what res means for rule r.
func (r *rule) detail(c *evalCtx, res ruleResult) string {
	w := c.req.Workload
	switch res.v {
	case vApplies:
		if r.deny {
			s := denyRule(r, w, res).Reason
			if r.audit {
				s = "would refuse: " + s
			}
			return s
		}
		if r.audit {
			return "would grant every requested target and scope"
		}
		return "grants every requested target and scope"
	case vSubject, vExpired, vTrustDomain, vAttribute:
		return r.workloadDetail(w, res)
	case vDelegatedOnly:
		return "the rule applies to delegations only (it lists actors), and the request has no actor"
	case vNoDelegation:
		return "the rule does not allow delegation (it lists no actors)"
	case vActor:
		a := c.req.Actor
		return fmt.Sprintf("the actor (upstream %q subject %q) is not among the rule's actors", a.Upstream, a.Subject)
	case vDepth:
		return fmt.Sprintf("delegation depth %d exceeds max_delegation_depth %d", c.req.DelegationDepth, r.maxDepth)
	case vWhenFalse:
		return "its condition is false"
	case vWhenError:
		if r.deny {
			return fmt.Sprintf("its condition failed to evaluate (%s)", oneLine(res.err.Error()))
		}
		return fmt.Sprintf("its condition failed to evaluate (%s), which counts as no match", oneLine(res.err.Error()))
	case vTarget:
		if r.deny {
			return "covers none of the requested targets"
		}
		return fmt.Sprintf("does not grant target %q", res.what)
	case vScope:
		if r.deny {
			return "covers none of the requested scopes"
		}
		return fmt.Sprintf("does not grant scope %q", res.what)
	case vClient:
		if !c.req.ClientAuthenticated {
			return "grants only to an authenticated client, and the client did not authenticate"
		}
		return fmt.Sprintf("does not list the authenticated client %q", c.req.ClientID)
	case vSender:
		return "requires a sender-constrained token, and this one would not be (the request is not over mTLS)"
	}
	return res.v.String()
}
