package policy

import (
	"time"

	"github.com/safeconduct/safeconduct/attest"
)

// Request is what a workload asks for in one exchange, after attestation.
type Request struct {
	// Workload is the attested subject.
	Workload *attest.Workload
	// Audiences are the requested `audience` values, Resources the requested RFC 8707
	// `resource` values. Each one is a target that must be granted.
	Audiences []string
	Resources []string
	// Scopes are the requested scopes (already split on spaces, deduplicated).
	Scopes []string

	// Actor is the attested actor of a delegation (RFC 8693 `actor_token`), nil
	// when the workload acts for itself.
	Actor *attest.Workload
	// DelegationDepth is the number of actors in the `act` chain of the token to
	// mint (the new actor and the ones nested in the subject token's `act`), as
	// the caller computed it: 0 without an Actor, at least 1 with one. Any other
	// combination is refused (DenyRequest).
	DelegationDepth int
	// RequestedTokenType is the RFC 8693 `requested_token_type`; ClientID the
	// client that called, when it named one. Conditions see them; empty means
	// absent.
	RequestedTokenType string
	ClientID           string
	// ClientAuthenticated reports that ClientID was authenticated (mTLS with an
	// X.509-SVID, or an RFC 7523 private_key_jwt assertion). Rules with clients
	// grant only then.
	ClientAuthenticated bool
	// SenderConstrained reports whether the token to mint will be
	// sender-constrained (bound to the mTLS client certificate, RFC 8705).
	SenderConstrained bool
	// Now is the time of the request, for rule expiry and conditions. It is
	// required: a zero Now is refused (DenyRequest), never read as "no expiry".
	Now time.Time
}

// Outcome classifies a decision so the edge can map it to a protocol error.
type Outcome int

const (
	// Allow: every target and scope is granted.
	Allow Outcome = iota
	// DenyNoRule: no allow rule matches the workload (default deny), or those that
	// do have a condition that is false or failed.
	DenyNoRule
	// DenyRule: an explicit deny rule matched.
	DenyRule
	// DenyTarget: the workload matches allow rules, but a requested audience or
	// resource is granted by none of them (or no target was requested and none can
	// be chosen). For DecideAdmin: a target upstream is outside every matching
	// rule's within_upstreams.
	DenyTarget
	// DenyScope: a requested scope is not granted by the rule that grants the targets.
	DenyScope
	// DenyActor: a delegation is refused: the actor is not one the rules allow,
	// the delegation is deeper than they allow, the subject token's may_act names
	// another actor, or the matching rules do not allow delegation at all.
	DenyActor
	// DenyClient: the only rules that would grant the request require an
	// authenticated client (clients), and the request has none or another one.
	DenyClient
	// DenySenderConstraint: the only rules that would grant the request require a
	// sender-constrained token, and this one would not be.
	DenySenderConstraint
	// DenyRequest: the request cannot be decided as given (no Now, an
	// inconsistent DelegationDepth, an unknown admin action). It points at a bug
	// in the caller rather than at the policy.
	DenyRequest
	// DenyAction: (DecideAdmin) admin rules match the caller but none grants the
	// action.
	DenyAction
)

// String returns a short, stable name for the outcome, fit for logs and metric
// labels.
func (o Outcome) String() string {
	switch o {
	case Allow:
		return "allow"
	case DenyNoRule:
		return "deny_no_rule"
	case DenyRule:
		return "deny_rule"
	case DenyTarget:
		return "deny_target"
	case DenyScope:
		return "deny_scope"
	case DenyActor:
		return "deny_actor"
	case DenyClient:
		return "deny_client"
	case DenySenderConstraint:
		return "deny_sender_constraint"
	case DenyRequest:
		return "deny_request"
	case DenyAction:
		return "deny_action"
	default:
		return "unknown"
	}
}

// Decision is the answer to a Request, with the reason for it. A Decision with
// Outcome != Allow grants nothing.
type Decision struct {
	Outcome Outcome
	// Rule names the rule that decided: the allow rule that granted, or the deny rule
	// that refused. Empty for the other refusals, where no single rule decided (the
	// Reason names the nearest one).
	Rule string
	// Reason says in one sentence why (for logs, audit and `stsctl policy test`; never
	// sent to clients).
	Reason string
	// Audiences are the granted targets (audiences then resources, in request order):
	// exactly what was requested, never more.
	Audiences []string
	// Scopes are the granted scopes: exactly the requested ones.
	Scopes []string
	// MaxTTL caps the minted token's lifetime; zero means the rule sets no cap.
	MaxTTL time.Duration
	// CopyAttributes names the workload attributes the minted token carries (the
	// granting rule's copy_attributes; a name the workload lacks is skipped). Read
	// only: it is the rule's own slice.
	CopyAttributes []string
	// RequireSenderConstraint is set when the granting rule requires the token to
	// be sender-constrained (the request said it would be).
	RequireSenderConstraint bool
	// Audited lists the audit-mode rules that matched the request, in file order,
	// with what each would have done. They never change the Outcome. Set on
	// refusals too.
	Audited []AuditHit
	// Trace is every rule considered, with its verdict. Only Explain and
	// ExplainAdmin fill it; Decide leaves it nil.
	Trace []TraceStep
}

// Allowed reports whether the decision grants the request.
func (d Decision) Allowed() bool { return d.Outcome == Allow }

// AuditHit is an audit-mode rule that matched a request.
type AuditHit struct {
	// Rule is the rule's name, Effect its effect (EffectAllow or EffectDeny).
	Rule   string `json:"rule"`
	Effect string `json:"effect"`
	// Would is the Outcome (as its String) the request would have had if this
	// rule alone were enforced: "deny_rule" for a deny rule, "allow" for an allow
	// rule that grants the whole request (or "deny_rule" when an enforced deny
	// rule refuses anyway). Compare it with the Decision's Outcome to see whether
	// enforcing the rule would change anything.
	Would string `json:"would"`
}

// Verdicts of a TraceStep. VerdictApplies is the only one that means the rule
// matched; every other one names the first check the rule failed.
const (
	// VerdictApplies: the rule matched: a deny rule refuses, an allow rule grants
	// the whole request (an admin rule grants the action).
	VerdictApplies = "applies"
	// The rule does not match the workload.
	VerdictSubject     = "subject"      // no subject pattern matches
	VerdictExpired     = "expired"      // the rule's expires date is past
	VerdictTrustDomain = "trust_domain" // the trust_domain attribute is missing or not listed
	VerdictAttribute   = "attribute"    // an attribute is missing or does not match
	// Delegation.
	VerdictDelegatedOnly = "delegated_only" // the rule has actors; the request has no actor
	VerdictNoDelegation  = "no_delegation"  // the request has an actor; the rule has no actors
	VerdictActor         = "actor"          // no actors entry matches the actor
	VerdictDepth         = "depth"          // the delegation is deeper than max_delegation_depth
	VerdictMayAct        = "may_act"        // the subject token's may_act names another actor
	// The condition.
	VerdictWhenFalse = "when_false"
	VerdictWhenError = "when_error"
	// What the rule grants (allow rules) or covers (deny rules).
	VerdictTarget           = "target"            // a requested target is not granted (deny: none is covered)
	VerdictScope            = "scope"             // a requested scope is not granted (deny: none is covered)
	VerdictClient           = "client"            // the rule requires an authenticated client it lists
	VerdictSenderConstraint = "sender_constraint" // the rule requires a sender-constrained token
	// Admin rules.
	VerdictAction         = "action"          // the action is not among the rule's actions
	VerdictTargetUpstream = "target_upstream" // a target upstream is outside within_upstreams
	// Steps without a rule.
	VerdictRequest = "request" // the request itself was refused before any rule
	VerdictRefused = "refused" // the last step of a refusal no single rule decided
)

// TraceStep is one rule considered by Explain, or a check of the request made
// before any rule (Rule empty).
type TraceStep struct {
	// Rule, Effect and Mode describe the rule.
	Rule   string `json:"rule,omitempty"`
	Effect string `json:"effect,omitempty"`
	Mode   string `json:"mode,omitempty"`
	// Verdict is VerdictApplies or the first check that failed.
	Verdict string `json:"verdict"`
	// Decided marks the step that decided the outcome.
	Decided bool `json:"decided,omitempty"`
	// Detail says in a sentence why.
	Detail string `json:"detail"`
}
