// Package policy decides what an attested workload may obtain: which audiences and
// resources (targets), which scopes, and for how long. It owns the policy file
// format, its validation, and the decision engine. It is pure: no I/O happens after
// loading, and a Decision carries the reason for it.
//
// # Files
//
// A policy is one or more YAML files, each holding a list of rules:
//
//	rules:
//	  - name: payments-to-ledger
//	    effect: allow                 # or deny
//	    upstreams: [cluster-a]
//	    subjects: ["system:serviceaccount:payments:*"]
//	    audiences: ["https://ledger.internal"]
//	    scopes: [ledger.read, ledger.write]
//	    max_ttl: 10m
//
// Loading is strict, and every problem of every file is reported at once, each
// with its file:line, in a *LoadError:
//
//   - Unknown or repeated keys, values of the wrong type (numbers or booleans where
//     strings are expected: quote them), YAML aliases and several YAML documents in
//     one file are errors.
//   - name is required and unique across all files. effect is required: allow or
//     deny.
//   - upstreams (exact upstream names) and subjects (patterns, below) need at least
//     one entry on every rule. Names, upstreams and patterns are non-empty and hold
//     no whitespace, control or invisible characters.
//   - audiences are exact strings. An allow rule must list at least one: an empty
//     list never means "any". On a deny rule, leaving audiences out (or empty)
//     means the rule applies whatever the target.
//   - scopes are exact RFC 6749 scope tokens. An allow rule without scopes grants
//     only requests without scopes; on a deny rule, no scopes means any scope.
//   - '*' is refused in audiences and scopes, which have no wildcards, so that "*"
//     is never mistaken for one.
//   - max_ttl is an optional positive Go duration ("10m", "1h30m") capping the
//     lifetime of tokens the rule grants; it is refused on deny rules.
//   - A file may hold no rules; a policy without rules denies everything. Such
//     files are reported by Policy.Warnings.
//   - A file is at most MaxFileSize bytes and a policy at most MaxRules rules.
//
// Load does not know which upstreams the server configures; call
// Policy.ValidateUpstreams with their names so a rule naming an unknown upstream is
// refused with its file:line instead of silently never matching.
//
// # Subject patterns
//
// In a subject pattern '*' matches any run of characters, including none and
// including ':' and '/'; every other character matches itself, case-sensitively.
// Patterns are anchored at both ends, so "system:serviceaccount:payments:*"
// matches "system:serviceaccount:payments:api" but not
// "system:serviceaccount:payments-x:api", and "*" alone matches every subject.
// Patterns are compiled once, at load.
//
// # Decisions
//
// Policy.Decide answers a Request:
//
//   - A rule matches the workload when the workload's Upstream is one of the rule's
//     upstreams and its Subject matches one of the rule's subject patterns.
//   - The targets are the requested audiences followed by the requested resources,
//     without repeats. At least one is required (DenyTarget otherwise).
//   - A deny rule applies when it matches the workload, its audiences are empty or
//     include a requested target, and its scopes are empty or include a requested
//     scope. The first deny rule that applies decides (DenyRule), whatever allow
//     rules say.
//   - Otherwise the first allow rule, in file order, that matches the workload and
//     grants every requested target and every requested scope decides (Allow). The
//     Decision grants exactly what was requested, never more, and carries that
//     rule's max_ttl. One rule must cover the whole request: targets and scopes
//     granted by different rules are never combined.
//   - Otherwise the request is refused: DenyNoRule when no allow rule matches the
//     workload (deny by default), DenyTarget when none of those that do grants
//     every target, DenyScope when one grants every target but none of those grants
//     every scope.
//
// A refusal never grants part of a request. Every Decision has a one-sentence
// Reason for logs, audit and `stsctl policy test`; it is never meant for clients.
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
//	d := p.Decide(policy.Request{Workload: w, Audiences: audiences, Scopes: scopes})
//	if !d.Allowed() {
//		// map d.Outcome to invalid_target / invalid_scope; log d.Reason
//	}
package policy
