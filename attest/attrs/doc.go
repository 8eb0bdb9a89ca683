// Package attrs maps the verified claims of an upstream credential to the string
// attributes of a Workload, as Google STS attribute mapping does: each attribute is
// a CEL expression over `claims`, a map(string, dyn) of the verified claims.
//
// A Mapping is compiled once, at configuration load, from an optional preset and a
// map of attribute name -> expression; an expression of the same name replaces the
// preset's. Compile type-checks every expression (syntax, undeclared variables and
// functions, a result that cannot be a string) and reports every error at once.
// Apply evaluates each expression once per credential, each within CostLimit.
// Attribute names match [a-z][a-z0-9_]{0,63}; "sub", "iss" and "trust_domain" are
// reserved to verifiers, which set them from what they verified themselves.
//
// # Results
//
// An attribute is either present with a non-empty string of at most MaxValueLength
// bytes, or absent. It is absent when its expression yields "" (the idiom for a
// claim the token does not carry, see below) or fails: an unguarded missing claim
// ("no such key"), a type mismatch, the cost limit, or a result that is not a
// string. Failures are returned by Apply as *EvalError values for logs and never
// reject the credential. An absent attribute is not an empty one: consumers must
// treat it as matching no attribute pattern, not even "*".
//
// # Writing expressions
//
// Claims decoded from JSON are strings, doubles, bools, null, lists and maps. A
// result must be a string: convert other types explicitly. string(claims.n) on a
// JSON number formats a double ("74", but "1e+21" for large values); use
// string(int(claims.n)) for integers, which fails on fractions and values out of
// int64 range. Guard optional claims with has() for names that are identifiers, and
// `in` for others:
//
//	has(claims.email) ? claims.email : ""
//	"kubernetes.io" in claims && has(claims["kubernetes.io"].namespace) ? claims["kubernetes.io"].namespace : ""
//	claims.sub.startsWith("repo:my-org/") ? "my-org" : ""
//
// The standard CEL library is available (size, startsWith, endsWith, contains,
// matches, string, int, the comprehension macros); no extensions.
//
// # Presets
//
// PresetKubernetes (projected service account tokens, the `kubernetes.io` claim):
// namespace, service_account, service_account_uid, pod, pod_uid, node, node_uid,
// each derived only when the claim agrees with `sub`: sub must be exactly
// "system:serviceaccount:" + namespace + ":" + serviceaccount.name, so that an
// upstream whose subjects are bounded to one namespace cannot assert another
// through its nested claim. That check is the preset's gate, evaluated once per
// credential; an attribute given its own expression (overriding the preset's)
// is not gated.
//
// PresetGitHubActions (token.actions.githubusercontent.com): repository,
// repository_owner, repository_id, repository_owner_id, repository_visibility,
// ref, ref_type, ref_protected, head_ref, base_ref, sha, workflow, workflow_ref,
// workflow_sha, job_workflow_ref, job_workflow_sha, environment,
// runner_environment, run_id, run_attempt, actor, actor_id, event_name. What each
// is for, and the attack it stops, is in docs/presets.md.
//
// # Upstream conditions
//
// A Guard (NewGuard, from a GuardConfig) is an upstream's admission check, run
// by the verifiers once the attributes are mapped and before any policy rule:
// AttributeBounds (globs a present attribute's value must match), then
// Condition, a CEL expression over `claims` and `attributes` (map(string,
// string)) that must yield true and fails closed. CheckGuard type-checks it for
// `sts check-config`. ClaimPath names a claim for required_claims: a top-level
// name, or an RFC 6901 JSON Pointer ("/kubernetes.io/namespace").
//
// Presets are CEL expressions like any other, each guarded so that a missing claim
// yields an absent attribute; Mapping.Expressions shows them.
//
// Usage:
//
//	m, err := attrs.Compile(attrs.PresetGitHubActions, map[string]string{
//		"org_repo": `claims.repository.startsWith("my-org/") ? claims.repository : ""`,
//	})
//	if err != nil {
//		return err // every compile error, by attribute
//	}
//	attributes, err := m.Apply(claims)
//	if err != nil {
//		log.Debug("attributes absent", "error", err)
//	}
package attrs
