// Package policy decides what an attested workload may obtain (which audiences
// and resources, which scopes, for how long, carrying which attributes, through
// which actors) and who may use the admin API. It owns the policy file format,
// its validation, the decision engine and the access review. It is pure: no I/O
// happens after loading, the time is an input, and every Decision carries the
// reason for it.
//
// # Files
//
// A policy is one or more YAML files. Each may hold issuance rules, admin rules
// and sensitive audience patterns:
//
//	version: 2                                # pattern semantics (see Subject patterns)
//	sensitive_audiences: ["https://vault.*"]   # for Review only
//	rules:
//	  - name: payments-to-ledger
//	    effect: allow                 # or deny
//	    upstreams: [cluster-a]
//	    subjects: ["system:serviceaccount:payments:*"]
//	    audiences: ["https://ledger.internal"]
//	    scopes: [ledger.read, ledger.write]
//	    max_ttl: 10m
//	admin:
//	  - name: security-team
//	    upstreams: [cluster-a]
//	    subjects: ["system:serviceaccount:security:*"]
//	    actions: [revoke, block, lift, list]
//	    within_upstreams: ["*"]
//
// Loading is strict, and every problem of every file is reported at once, in a
// *LoadError, one per line as "file:line: path: message", the path naming the
// value at fault ("rules[2].subjects[0]"):
//
//   - Unknown or repeated keys (with a "did you mean" for near misses), values of
//     the wrong type (numbers or booleans where strings are expected: quote
//     them), YAML aliases, merge keys and several YAML documents in one file are
//     errors.
//   - name is required and unique across all rules and admin rules of all files.
//   - Names, upstreams, subject patterns and attribute names are non-empty and
//     hold no whitespace, control or invisible characters.
//   - An empty list or mapping never means "any": where a key of this version
//     takes a list (trust_domains, attributes, resources, copy_attributes,
//     actors, actions, within_upstreams, sensitive_audiences), an empty one is
//     an error; leave the key out instead. So is an empty `when`.
//   - A condition that does not compile or type-check is an error at the line of
//     its `when` key, with the column (and the line inside a multi-line
//     condition) of the problem.
//   - A file may define nothing; a policy without allow rules denies everything.
//     Such files are reported by Policy.Warnings.
//   - A file is at most MaxFileSize bytes and a policy at most MaxRules rules
//     (issuance and admin rules together).
//
// Load does not know which upstreams the server configures; call
// Policy.ValidateUpstreams with their names so a rule, an actor or an admin rule
// naming an unknown upstream is refused with its file:line instead of silently
// never matching.
//
// # Rules
//
// The keys of an issuance rule. The v0 keys (name, effect, upstreams, subjects,
// audiences, scopes, max_ttl) keep their meaning.
//
// What the rule is:
//
//   - name (required), effect (required: allow or deny).
//   - mode: enforce (the default) or audit. An audit rule is evaluated and
//     reported in Decision.Audited, and never changes an outcome: use it to try a
//     rule on live traffic before enforcing it.
//   - owner: who answers for the rule (free text). Review flags rules without one.
//   - expires: a date (YYYY-MM-DD, meaning midnight UTC at the start of that day)
//     or an RFC 3339 time. From then on the rule no longer matches (allow and deny
//     rules alike). Review flags expired rules still in the file.
//   - review_by: a date or time, as expires. It never affects matching; Review
//     flags rules past it.
//
// Which workloads it matches (all given keys must match):
//
//   - upstreams (required): exact upstream names.
//   - subjects (required): subject patterns (below); one must match.
//   - trust_domains: exact values; the workload's "trust_domain" attribute must be
//     one of them. A workload without that attribute never matches.
//   - attributes: a mapping of attribute name to value pattern (same syntax as
//     subject patterns; spaces allowed). Every one must match the workload's
//     attribute of that name. A missing attribute never matches, not even "*".
//     Attributes are only as trustworthy as the upstream that asserts them:
//     bound them where the upstream is configured (`attribute_bounds`,
//     `condition`, checked on every token before any rule; the kubernetes
//     preset derives attributes only from a token consistent with its `sub`).
//     The review (below) drops rules an upstream's bounds never satisfy.
//   - when: a CEL condition (see Conditions) that must evaluate to true.
//   - actors: which actors may act for the matched workloads (see Delegation).
//     A rule with actors matches delegated requests only; a rule without actors
//     never allows a delegated request.
//
// What an allow rule grants (one rule must grant the whole request):
//
//   - audiences: exact values. Without resources, they are granted as resources
//     (RFC 8707) too, as in v0.
//   - resources: exact absolute URIs without fragment. When present, requested
//     resources are checked against them only, no longer against audiences; a
//     rule may list resources and no audiences. An allow rule must grant at least
//     one audience or resource.
//   - scopes: exact RFC 6749 scope tokens. Down-scoping only: a request may ask for
//     any subset, and a rule without scopes grants only requests without scopes.
//   - max_ttl: a positive Go duration ("10m", "1h30m") capping the token lifetime.
//   - copy_attributes: names of workload attributes to copy into the minted token
//     (Decision.CopyAttributes). Nothing is copied by default, and claims are
//     never copied wholesale; a name the workload lacks is skipped.
//   - require_sender_constraint: true: the rule grants only tokens that will be
//     sender-constrained (Request.SenderConstrained: the STS binds them to the
//     mTLS client certificate, RFC 8705); otherwise it refuses with outcome
//     DenySenderConstraint.
//   - clients: glob patterns of client IDs. The rule grants only to an
//     authenticated client (Request.ClientAuthenticated: mTLS with an X.509-SVID,
//     or an RFC 7523 private_key_jwt assertion) whose ID matches one; otherwise it
//     refuses with outcome DenyClient. Client authentication is optional unless a
//     rule says so.
//   - max_delegation_depth: see Delegation.
//
// '*' is refused in audiences, resources and scopes, which have no wildcards, so
// that "*" is never mistaken for one.
//
// On a deny rule, audiences and resources say which targets it covers (a
// requested audience listed in audiences, or a requested resource listed in
// resources, or in audiences when the rule lists no resources) and scopes which
// scopes; leaving both target keys out means any target, leaving scopes out any
// scope. max_ttl, copy_attributes, require_sender_constraint and
// max_delegation_depth are refused on deny rules.
//
// # Subject patterns
//
// Patterns are anchored at both ends and case-sensitive; every character but '*'
// matches itself, and there is no escape. What '*' matches depends on the file's
// top-level `version` key (version: 2, or 1, the default):
//
//   - version 2: ':' and '/' separate segments. '*' matches any run of characters
//     within one segment (none of ':' or '/'), '**' (two or more stars) any run,
//     separators included. "repo:acme/*" matches "repo:acme/app", not
//     "repo:acme/app:pull_request" nor "repo:acme/app:environment:prod";
//     "repo:acme/app:**" matches every subject form of that repository;
//     "spiffe://td/ns/*/sa/*" one namespace and one service account.
//   - version 1, the default when the key is absent: '*' matches any run of
//     characters, ':' and '/' included ('**' is the same as '*'). This is AWS
//     StringLike, and a trap: "repo:acme/*" matches the pull_request and
//     environment subjects of every acme repository too. Old files keep this
//     meaning. Policy.Warnings reports each version 1 file with a '*' pattern
//     containing ':' or '/' (its first few such patterns), and the review a
//     crosses_segments finding per allow or admin rule with one.
//
// "*" alone matches every subject under version 1, and every subject without ':'
// or '/' under version 2 ("**" matches all). The version applies per file to
// subject patterns (rules, actors and admin rules), attribute value patterns and
// clients; sensitive_audiences, which only the review reads, keep the version 1
// meaning. Any other value of `version` is an error. Patterns are compiled once, at
// load (internal/glob).
//
// Migrating a file: add `version: 2`, keep '*' where it stands for one segment,
// write '**' where it must cross (a branch with '/', a SPIFFE path of any depth),
// and check the result with `stsctl policy test`.
//
// # Decisions
//
// Policy.Decide answers a Request. Before any rule, a request is refused when it
// has no workload (DenyNoRule), a workload without upstream or subject, no Now, an
// Actor without DelegationDepth >= 1 or a DelegationDepth without an Actor
// (DenyRequest), no target or more than MaxTargets (DenyTarget), more than
// MaxScopes scopes (DenyScope), or when the subject token's may_act does not name
// the actor (DenyActor, see Delegation).
//
// Then, among the rules of the workload's upstream whose subject pattern matches:
//
//   - Deny rules first: the first enforced deny rule that applies decides
//     (DenyRule), whatever allow rules say. A deny rule applies when it matches
//     the workload (trust domains, attributes, not expired, its actors when it has
//     any), covers a requested target (or any) and a requested scope (or any),
//     and its condition is true or fails to evaluate.
//   - Otherwise the first enforced allow rule, in file order, that matches the
//     workload and the delegation, grants every requested target and scope,
//     satisfies clients and require_sender_constraint, and whose condition is true, decides
//     (Allow). The Decision grants exactly what was requested, never more, with
//     that rule's max_ttl, copy_attributes and require_sender_constraint.
//     Targets and scopes granted by different rules are never combined.
//   - Otherwise the request is refused. The outcome comes from the allow rules
//     that got furthest through their checks, in this order: workload (DenyNoRule
//     when none matches), delegation (DenyActor), targets (DenyTarget), scopes
//     (DenyScope), client (DenyClient), sender constraint (DenySenderConstraint), condition
//     (DenyNoRule). When the rule listing the requested targets refuses the
//     delegation, the outcome is DenyActor. The Reason names the nearest rule,
//     preferring the one that lists the requested targets, and says what failed.
//   - Audit-mode rules are evaluated on every decision and listed in
//     Decision.Audited when they would apply, with the Outcome the request would
//     have had had the rule been enforced (AuditHit.Would).
//
// A refusal never grants part of a request. Every Decision has a one-sentence
// Reason for logs, audit and `stsctl policy test`; it quotes what the caller
// controls and is never meant for clients.
//
// Decide is the hot path: rules are indexed by upstream and subject pattern
// (literal patterns by subject, patterns with a literal prefix by that prefix,
// patterns starting with '*' in a list), and then by the first equality term of
// their condition (below), so a decision looks at the rules that can apply, in
// file order, whatever the size of the policy; static checks run before
// conditions; and the allow path allocates nothing unless a condition runs.
//
// An equality term is a leading conjunct of a `when` (every conjunct before it in
// the top-level && chain is one too) of the form workload.attributes["k"] == "v",
// workload.claims["k"] == "v" (or .k, or "v" == ...), or ... in ["v", "w"]. When the
// workload has k as a string that is none of the values, the condition is false
// whatever else it says (CEL's && is false as soon as one operand is), so such a
// rule is neither looked at nor evaluated. A missing k, or a claim that is not a
// string, decides nothing: the condition runs as written. So a thousand rules that
// share subject and audience and differ by `workload.claims.repository ==
// "acme/app1"` cost what one does; write the equality terms first to benefit. A
// refusal names the nearest rule: the first that grants everything requested but
// for its condition ends the search; otherwise (no rule grants the targets or
// scopes) every rule the subject matches is looked at, without running the
// conditions the terms settle. The indexes change no decision and no reason:
// tests compare them with an evaluation of every rule. Policy.Explain returns the same Decision with a Trace of every
// rule of the upstream (enforced deny rules, then enforced allow rules, then
// audit rules) and its verdict: applies, or the first check it failed (subject,
// expired, trust_domain, attribute, delegated_only, no_delegation, actor, depth,
// target, scope, sender_constraint, when_false, when_error), plus a final
// "refused" step when no single rule decided.
//
// # Conditions
//
// A `when` is a CEL expression (https://cel.dev) of type bool, compiled and
// type-checked at load. It sees:
//
//	workload   safeconduct.Workload   the attested subject
//	  .id          string              the identity tokens are minted for
//	  .upstream    string
//	  .issuer      string
//	  .subject     string
//	  .attributes  map(string, string)
//	  .claims      map(string, dyn)    every verified claim, as decoded from JSON
//	request    safeconduct.Request
//	  .audiences   list(string)
//	  .resources   list(string)
//	  .scopes      list(string)
//	  .requested_token_type  string    absent when empty
//	  .client_id   string              absent when empty
//	  .client_authenticated bool       client_id was authenticated (mTLS or private_key_jwt)
//	  .actor       safeconduct.Workload  absent without an actor
//	  .delegation_depth  int           0 without an actor
//	now        timestamp              Request.Now
//
// Field names are checked at load: `workload.atributes` is an error. The
// standard CEL library is available, with the strings and sets extensions. JSON
// numbers in claims are doubles; comparing them with int literals works
// (`workload.claims.level > 3`).
// Examples:
//
//	when: workload.attributes["env"] == "prod"
//	when: '"env" in workload.attributes && workload.attributes["env"].startsWith("prod")'
//	when: workload.claims.repository_owner == "acme" && workload.claims.ref == "refs/heads/main"
//	when: has(workload.claims.groups) && workload.claims.groups.exists(g, g == "deployers")
//	when: '!has(request.actor) || request.actor.attributes["namespace"] == "gateway"'
//	when: request.scopes.all(s, s.startsWith("ledger.")) && now < timestamp("2026-01-01T00:00:00Z")
//	when: has(request.client_id) && request.client_id in ["billing-cli", "billing-ui"]
//
// Missing data is never a default value: reading a missing map key, an absent
// actor, client_id or requested_token_type, or comparing values of the wrong
// types is an evaluation error (test with `has(...)` or `in` first). An
// evaluation error in an allow rule means the rule does not match (the reason is
// recorded); in a deny rule it means the deny applies (fail closed). Each
// evaluation is bounded by MaxConditionCost (exceeding it is an evaluation
// error), and a condition's text by MaxConditionSize.
//
// # Delegation
//
// A delegated request (RFC 8693 §4.1: an actor_token) has Request.Actor set and
// Request.DelegationDepth, the number of actors in the act chain of the token to
// mint, at least 1 (the caller computes it from the subject token's act claim).
//
//	rules:
//	  - name: gateway-for-orders
//	    effect: allow
//	    upstreams: [cluster-a]
//	    subjects: ["system:serviceaccount:orders:*"]
//	    audiences: ["https://inventory.internal"]
//	    actors:
//	      - upstreams: [cluster-a]
//	        subjects: ["system:serviceaccount:gateway:*"]
//	        attributes: {namespace: gateway}
//	    max_delegation_depth: 1
//
// Each actors entry has upstreams and subjects (both required) and optional
// attributes, matched against the actor as a rule's are against the workload.
// max_delegation_depth (1 to MaxDelegationDepth; default 1, a direct actor only)
// bounds DelegationDepth. A delegated request is allowed only by an allow rule
// whose actors match the actor; a rule with actors never matches a direct
// request, so direct access needs its own rule. A deny rule with actors applies
// only to delegated requests with a matching actor; a deny rule without actors
// applies to direct and delegated requests alike.
//
// When the subject token carries may_act (RFC 8693 §4.4; Workload.Claims
// ["may_act"], an object with sub and optional iss), the actor's ID must equal
// may_act.sub, and its Issuer may_act.iss when given; otherwise, or when may_act
// is malformed, the request is refused (DenyActor) even if a rule would allow it.
//
// # Admin rules
//
// Authorization of the admin API is policy too, and deny by default. An admin
// rule has name, owner, expires, review_by, upstreams, subjects, trust_domains,
// attributes and when, matched against the caller workload as above, and:
//
//   - actions (required): what it grants, among revoke, block, lift, list,
//     report_change, rotate_keys, read_feed and introspect (the Action constants).
//   - within_upstreams (required): the upstreams whose workloads the actions may
//     target, or ["*"] for all. A request naming no target upstreams (all
//     upstreams, or an action such as rotate_keys that targets none) needs "*".
//
// Policy.DecideAdmin answers an AdminRequest: the first admin rule, in file order,
// that matches the caller, lists the action, covers every target upstream and
// whose condition is true allows it. Conditions of admin rules see `workload` (the
// caller), `request` (safeconduct.AdminRequest: action string, target_upstreams
// list(string)) and `now`; an evaluation error means no match. The refusals are
// DenyNoRule (no rule matches the caller), DenyAction, DenyTarget and DenyRequest
// (an unknown action, no Now).
//
// # Review
//
// Policy.Review(now, usage) is the access review behind `stsctl policy review`:
// per upstream and subject pattern, what enforced unexpired allow rules make
// obtainable (audiences, resources, scopes, the largest max_ttl, copied
// attributes, actors, the conditions that narrow it, the rules); the deny rules;
// the admin rights; and findings, each with rule, file:line, kind, severity and
// (for rules that grant) sensitivity: unused (usage known and zero),
// review_overdue, expired, no_owner, broad, unreachable, github_unpinned,
// audit_mode and deep_delegation (max_delegation_depth above 1).
//
// Policy.ReviewWith also takes what each upstream checks before policy
// (ReviewOptions): the subjects it may assert, and its preset, required claims,
// attribute bounds and condition (UpstreamLimits). A rule never grants beyond
// them, so the review shows each pattern's effective breadth within the
// subjects, lists under NeverAsserted (not as access) the patterns an upstream
// never asserts and the rules whose attribute pattern is disjoint from its
// attribute_bounds or its condition (of which it follows the top-level `&&`
// conjuncts attributes.X == "v", attributes.X.startsWith("p") and
// attributes.X in ["a", "b"]; on sub, they bound an upstream without
// subjects), and reports those rules unreachable.
//
// broad: a subject pattern of an allow or admin rule that, within what the
// upstream asserts, spans more than one Kubernetes namespace
// ("system:serviceaccount:NS:"), GitHub repository owner ("repo:OWNER/"),
// SPIFFE trust domain or path root ("spiffe://TD/ROOT/", "/ns/NS/" for the
// Kubernetes layout), or has no literal prefix: the literal prefix of the
// pattern (or of the upstream pattern it falls within) must complete the root.
// High when it grants a sensitive_audiences match, or admin rights.
// github_unpinned: an allow rule of a github_actions upstream that pins neither
// event_name nor ref_protected "true" nor an environment (attributes, subject,
// when, or the upstream's condition or required claims).
//
// Findings are ranked by severity (high, warning, info), then sensitivity:
// sensitive (a sensitive_audiences target, or admin rights), elevated (a scope
// naming write, admin, delete or manage, or "*"; or max_ttl over an hour),
// normal; then file and line. Review.WriteText prints the review; its JSON
// (Schema ReviewSchema) is documented in docs/policy-review.md. The output is
// deterministic.
//
// # Identity
//
// Policy.Digest identifies the policy's content ("sha256:" and the SHA-256 of the
// sha256sum listing of its files, "HEX  NAME" per line, in order) and Policy.Files
// each file's SHA-256. The server shows both for the live policy (`/policyz` on
// its operations listener, `stsctl policy status`, safeconduct_policy_info).
//
// # Usage
//
//	p, err := policy.Load("policy/base.yaml", "policy/payments.yaml")
//	if err != nil {
//		return err // a *policy.LoadError: one "file:line: problem" per line
//	}
//	if err := p.ValidateUpstreams(configuredUpstreams); err != nil {
//		return err
//	}
//	d := p.Decide(policy.Request{Workload: w, Audiences: audiences, Scopes: scopes, Now: now})
//	if !d.Allowed() {
//		// map d.Outcome to invalid_target / invalid_scope / invalid_request; log d.Reason
//	}
package policy
