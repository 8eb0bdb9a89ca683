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
}

// Outcome classifies a decision so the edge can map it to a protocol error.
type Outcome int

const (
	// Allow: every target and scope is granted.
	Allow Outcome = iota
	// DenyNoRule: no allow rule matches the workload (default deny).
	DenyNoRule
	// DenyRule: an explicit deny rule matched.
	DenyRule
	// DenyTarget: the workload matches allow rules, but a requested audience or
	// resource is granted by none of them (or no target was requested and none can
	// be chosen).
	DenyTarget
	// DenyScope: a requested scope is not granted by the rule that grants the targets.
	DenyScope
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
	default:
		return "unknown"
	}
}

// Decision is the answer to a Request, with the reason for it. A Decision with
// Outcome != Allow grants nothing.
type Decision struct {
	Outcome Outcome
	// Rule names the rule that decided: the allow rule that granted, or the deny rule
	// that refused. Empty for DenyNoRule, DenyTarget and DenyScope, where no single
	// rule decided (the Reason names the nearest one).
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
}

// Allowed reports whether the decision grants the request.
func (d Decision) Allowed() bool { return d.Outcome == Allow }
