package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/safeconduct/safeconduct/attest"
)

// Admin actions: what an admin rule may grant. The server asks DecideAdmin with
// one of them before every admin operation.
const (
	ActionRevoke       = "revoke"        // revoke tokens (by jti or selector)
	ActionBlock        = "block"         // block a selector from new tokens
	ActionLift         = "lift"          // lift a revocation or block
	ActionList         = "list"          // list revocations and blocks
	ActionReportChange = "report_change" // report a runtime attribute change of a workload
	ActionRotateKeys   = "rotate_keys"   // rotate the signing keys; revoke every token of a retired key (kid)
	ActionReadFeed     = "read_feed"     // read the revocation feed
	ActionIntrospect   = "introspect"    // introspect tokens (RFC 7662)
)

var adminActions = []string{
	ActionRevoke, ActionBlock, ActionLift, ActionList, ActionReportChange,
	ActionRotateKeys, ActionReadFeed, ActionIntrospect,
}

// Actions returns every admin action, in a stable order.
func Actions() []string { return slices.Clone(adminActions) }

// AnyUpstream, alone in within_upstreams, lets an admin rule's actions target the
// workloads of every upstream, and actions that target none (rotate_keys).
const AnyUpstream = "*"

// AdminRequest is an operation of the admin API, to authorize.
type AdminRequest struct {
	// Caller is the attested workload calling the admin API.
	Caller *attest.Workload
	// Action is one of the Action constants.
	Action string
	// TargetUpstreams are the upstreams whose workloads or tokens the action
	// touches (e.g. the upstream a revocation selector names). Empty means all
	// upstreams, or an action that targets no workload (rotate_keys, an
	// unfiltered feed), which only a rule with within_upstreams ["*"] grants.
	TargetUpstreams []string
	// Now is the time of the request, required as in Request.
	Now time.Time
}

// adminRule is the compiled form of one admin rule.
type adminRule struct {
	name string
	file string
	line int
	matcher
	actions []string
	// within are the upstream names of within_upstreams; withinAll is set when
	// it is ["*"].
	within    []located
	withinAll bool
}

// AdminRule is a read-only description of one admin rule.
type AdminRule struct {
	Name     string
	File     string
	Line     int
	Owner    string
	Expires  time.Time
	ReviewBy time.Time
	// Upstreams, Subjects, TrustDomains, Attributes and When match the caller, as
	// in Rule.
	Upstreams    []string
	Subjects     []string
	TrustDomains []string
	Attributes   map[string]string
	When         string
	// Actions are the actions granted; WithinUpstreams the upstreams they may
	// target (["*"] for all).
	Actions         []string
	WithinUpstreams []string
}

// AdminRules returns every admin rule in file order.
func (p *Policy) AdminRules() []AdminRule {
	if p == nil {
		return nil
	}
	out := make([]AdminRule, 0, len(p.admin))
	for _, r := range p.admin {
		x := AdminRule{
			Name:            r.name,
			File:            r.file,
			Line:            r.line,
			Owner:           r.owner,
			Expires:         r.expires,
			ReviewBy:        r.reviewBy,
			Upstreams:       values(r.upstream),
			Subjects:        patterns(r.subjects),
			TrustDomains:    slices.Clone(r.trustDomains),
			Attributes:      attrMap(r.attributes),
			Actions:         slices.Clone(r.actions),
			WithinUpstreams: values(r.within),
		}
		if r.withinAll {
			x.WithinUpstreams = []string{AnyUpstream}
		}
		if r.when != nil {
			x.When = r.when.src
		}
		out = append(out, x)
	}
	return out
}

var adminKeys = []string{
	"name", "owner", "expires", "review_by",
	"upstreams", "subjects", "trust_domains", "attributes", "when",
	"actions", "within_upstreams",
}

func (c *compiler) adminRule(file string, index int, n *yaml.Node) {
	e, ok := c.open(file, "admin", "admin rule", index, n, adminKeys)
	if !ok {
		return
	}
	before := len(c.problems)
	r := &adminRule{file: file, line: n.Line}
	r.name = c.name(e, "admin rule")
	r.matcher = c.matcher(e, true)

	p := len(c.problems)
	for _, a := range c.stringList(e, "actions", checkToken) {
		if !slices.Contains(adminActions, a.value) {
			c.problem(file, a.line, e.at("actions"), "unknown action %q (actions are %s)", a.value, strings.Join(adminActions, ", "))
			continue
		}
		r.actions = append(r.actions, a.value)
	}
	if len(r.actions) == 0 && len(c.problems) == p {
		c.problem(file, e.line("actions"), e.at("actions"), "at least one action is required")
	}

	p = len(c.problems)
	within := c.stringList(e, "within_upstreams", checkToken)
	for _, u := range within {
		if u.value == AnyUpstream {
			r.withinAll = true
			if len(within) > 1 {
				c.problem(file, u.line, e.at("within_upstreams"), "%q stands alone (it already means every upstream)", AnyUpstream)
			}
			continue
		}
		r.within = append(r.within, u)
	}
	if len(within) == 0 && len(c.problems) == p {
		c.problem(file, e.line("within_upstreams"), e.at("within_upstreams"), "at least one upstream, or \"*\" for all, is required")
	}

	if len(c.problems) != before {
		return
	}
	c.admin = append(c.admin, r)
}

// DecideAdmin answers whether req.Caller may perform req.Action on the workloads
// of req.TargetUpstreams. Admin rights are deny by default: the first admin rule
// (in file order) that matches the caller, lists the action, covers every target
// upstream and whose condition holds grants it. A condition that fails to evaluate
// does not match. It is pure and safe for concurrent use.
func (p *Policy) DecideAdmin(req AdminRequest) Decision {
	return p.decideAdmin(&req, nil)
}

// ExplainAdmin answers as DecideAdmin does, with a Trace of every admin rule of
// the caller's upstream.
func (p *Policy) ExplainAdmin(req AdminRequest) Decision {
	var t tracer
	d := p.decideAdmin(&req, &t)
	d.Trace = t.steps
	if d.Trace == nil {
		d.Trace = []TraceStep{}
	}
	return d
}

// Stages of an admin rule's checks, to explain a refusal by the rule that got
// furthest.
const (
	adminStageSubject = iota
	adminStageWorkload
	adminStageWhen
	adminStageAction
	adminStageTarget
)

func (v verdict) adminStage() int {
	switch v {
	case vSubject:
		return adminStageSubject
	case vWhenFalse, vWhenError:
		return adminStageWhen
	case vAction:
		return adminStageAction
	case vTargetUpstream:
		return adminStageTarget
	default:
		return adminStageWorkload
	}
}

func (p *Policy) decideAdmin(req *AdminRequest, t *tracer) Decision {
	if p == nil {
		return t.refuse(DenyNoRule, "no policy is loaded")
	}
	w := req.Caller
	if w == nil {
		return t.refuse(DenyNoRule, "the admin request has no attested caller")
	}
	if req.Now.IsZero() {
		return t.refuse(DenyRequest, "the admin request has no time (AdminRequest.Now is zero)")
	}
	if !slices.Contains(adminActions, req.Action) {
		return t.refuse(DenyRequest, fmt.Sprintf("unknown admin action %q", req.Action))
	}
	if len(req.TargetUpstreams) > MaxTargets {
		return t.refuse(DenyRequest, fmt.Sprintf("%d target upstreams, more than the %d allowed", len(req.TargetUpstreams), MaxTargets))
	}
	if slices.Contains(req.TargetUpstreams, "") || slices.Contains(req.TargetUpstreams, AnyUpstream) {
		return t.refuse(DenyRequest, "an empty or \"*\" target upstream (leave TargetUpstreams empty to mean all)")
	}

	var vars *celVars
	type result struct {
		r   *adminRule
		res ruleResult
	}
	var results []result
	rules := p.adminIndex[w.Upstream]
	for i, r := range rules {
		res := r.eval(req, &vars)
		if res.v == vApplies {
			t.adminStep(r, req, res, true)
			if t != nil {
				// Trace the rest, which cannot change the outcome.
				for _, rest := range rules[i+1:] {
					t.adminStep(rest, req, rest.eval(req, &vars), false)
				}
			}
			return Decision{Outcome: Allow, Rule: r.name, Reason: fmt.Sprintf("admin rule %q grants %s", r.name, describeAdmin(req))}
		}
		t.adminStep(r, req, res, false)
		results = append(results, result{r, res})
	}

	best, at := adminStageSubject, -1
	for i, x := range results {
		if s := x.res.v.adminStage(); s > best || at < 0 && s == best {
			best, at = s, i
		}
	}
	var d Decision
	switch {
	case best == adminStageSubject:
		d = Decision{Outcome: DenyNoRule, Reason: fmt.Sprintf("no admin rule matches caller upstream %q subject %q", w.Upstream, w.Subject)}
	default:
		x := results[at]
		o := DenyNoRule
		switch best {
		case adminStageAction:
			o = DenyAction
		case adminStageTarget:
			o = DenyTarget
		}
		d = Decision{Outcome: o, Reason: fmt.Sprintf("no admin rule grants %s to caller upstream %q subject %q (nearest: admin rule %q: %s)",
			describeAdmin(req), w.Upstream, w.Subject, x.r.name, x.r.detail(req, x.res))}
	}
	t.add(TraceStep{Verdict: VerdictRefused, Decided: true, Detail: d.Reason})
	return d
}

func describeAdmin(req *AdminRequest) string {
	if len(req.TargetUpstreams) == 0 {
		return fmt.Sprintf("action %q on every upstream", req.Action)
	}
	return fmt.Sprintf("action %q on upstreams %q", req.Action, req.TargetUpstreams)
}

// eval checks admin rule r against req; vars is built when a condition first
// runs.
func (r *adminRule) eval(req *AdminRequest, vars **celVars) ruleResult {
	if res := r.matchWorkload(req.Caller, req.Now); res.v != vApplies {
		return res
	}
	if r.when != nil {
		if *vars == nil {
			*vars = newAdminVars(req)
		}
		if res := whenResult(r.when.eval(*vars)); res.v != vApplies {
			return res
		}
	}
	if !slices.Contains(r.actions, req.Action) {
		return ruleResult{v: vAction}
	}
	if r.withinAll {
		return ruleResult{v: vApplies}
	}
	if len(req.TargetUpstreams) == 0 {
		return ruleResult{v: vTargetUpstream}
	}
	for _, u := range req.TargetUpstreams {
		if !slices.ContainsFunc(r.within, func(l located) bool { return l.value == u }) {
			return ruleResult{v: vTargetUpstream, what: u}
		}
	}
	return ruleResult{v: vApplies}
}

func (t *tracer) adminStep(r *adminRule, req *AdminRequest, res ruleResult, decided bool) {
	if t == nil {
		return
	}
	t.add(TraceStep{Rule: r.name, Effect: EffectAllow, Mode: ModeEnforce, Verdict: res.v.String(), Decided: decided, Detail: r.detail(req, res)})
}

func (r *adminRule) detail(req *AdminRequest, res ruleResult) string {
	switch res.v {
	case vApplies:
		return "grants " + describeAdmin(req)
	case vWhenFalse:
		return "the condition is false"
	case vWhenError:
		return fmt.Sprintf("the condition failed to evaluate (%s), which counts as no match", oneLine(res.err.Error()))
	case vAction:
		return fmt.Sprintf("does not grant action %q", req.Action)
	case vTargetUpstream:
		if res.what == "" {
			return "does not grant actions on every upstream (within_upstreams is not \"*\")"
		}
		return fmt.Sprintf("upstream %q is not within its within_upstreams", res.what)
	}
	return r.workloadDetail(req.Caller, res)
}
