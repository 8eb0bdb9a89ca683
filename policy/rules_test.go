package policy_test

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

func loadFeatures(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Load(filepath.Join("testdata", "features.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ValidateUpstreams([]string{"k8s", "spiffe"}); err != nil {
		t.Fatal(err)
	}
	return p
}

// sa builds a Kubernetes-like workload of upstream k8s, with attributes and claims
// as pairs ("attr:name", value) or ("claim:name", value).
func sa(ns, name string, kv ...any) *attest.Workload {
	w := &attest.Workload{
		Upstream:   "k8s",
		Issuer:     "https://k8s.example",
		Subject:    "system:serviceaccount:" + ns + ":" + name,
		ID:         ns + "/" + name,
		Attributes: map[string]string{},
		Claims:     map[string]any{},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		switch {
		case strings.HasPrefix(k, "attr:"):
			w.Attributes[strings.TrimPrefix(k, "attr:")] = kv[i+1].(string)
		case strings.HasPrefix(k, "claim:"):
			w.Claims[strings.TrimPrefix(k, "claim:")] = kv[i+1]
		default:
			panic(k)
		}
	}
	return w
}

// featureCase is one request against testdata/features.yaml; req builds it, so
// each case says exactly which workload and actor it sends.
type featureCase struct {
	name string
	req  func() policy.Request
	want policy.Outcome
	rule string
	// reason must appear in the Reason.
	reason string
	// check, when set, looks at the rest of the Decision.
	check func(t *testing.T, d policy.Decision)
}

func aud(w *attest.Workload, audiences ...string) func() policy.Request {
	return func() policy.Request { return at(policy.Request{Workload: w, Audiences: audiences}) }
}

func delegated(w, actor *attest.Workload, depth int, audiences ...string) func() policy.Request {
	return func() policy.Request {
		return at(policy.Request{Workload: w, Actor: actor, DelegationDepth: depth, Audiences: audiences})
	}
}

func with(f func() policy.Request, edit func(*policy.Request)) func() policy.Request {
	return func() policy.Request {
		r := f()
		edit(&r)
		return r
	}
}

var (
	gateway = sa("gateway", "api", "attr:namespace", "gateway")
	batch   = sa("batch", "job", "attr:namespace", "batch")
)

func featureCases() []featureCase {
	prod := sa("pay", "api", "attr:env", "prod", "claim:risk", 1.0)
	return []featureCase{
		// Conditions.
		{name: "when true allows", req: aud(prod, "https://cel.example"), want: policy.Allow, rule: "cel-allow"},
		{name: "when false does not match", req: aud(sa("pay", "api", "attr:env", "dev", "claim:risk", 1.0), "https://cel.example"),
			want: policy.DenyNoRule, reason: `rule "cel-allow" grants every requested target and scope, but its condition is false`},
		{name: "when error in an allow rule does not match", req: aud(sa("pay", "api", "claim:risk", 1.0), "https://cel.example"),
			want: policy.DenyNoRule, reason: `its condition failed to evaluate (no such key: env), which counts as no match`},
		{name: "when true in a deny rule refuses", req: aud(sa("pay", "api", "attr:env", "prod", "claim:risk", 9.0), "https://cel.example"),
			want: policy.DenyRule, rule: "cel-deny"},
		{name: "when error in a deny rule refuses (missing claim)", req: aud(sa("pay", "api", "attr:env", "prod"), "https://cel.example"),
			want: policy.DenyRule, rule: "cel-deny", reason: `because its condition failed to evaluate (no such key: risk)`},
		{name: "when error in a deny rule refuses (wrong type)", req: aud(sa("pay", "api", "attr:env", "prod", "claim:risk", "high"), "https://cel.example"),
			want: policy.DenyRule, rule: "cel-deny", reason: "no such overload"},
		{name: "deny condition is not evaluated for other targets", req: aud(sa("pay", "api", "attr:namespace", "payments", "attr:image", "registry.internal/pay:1"), "https://attr.example"),
			want: policy.Allow, rule: "attr-glob"},

		// Attributes.
		{name: "attribute globs match", req: aud(sa("pay", "api", "attr:namespace", "payments", "attr:image", "registry.internal/pay@sha256:ab"), "https://attr.example"),
			want: policy.Allow, rule: "attr-glob"},
		{name: "attribute glob mismatch", req: aud(sa("pay", "api", "attr:namespace", "payments", "attr:image", "docker.io/pay"), "https://attr.example"),
			want: policy.DenyTarget, reason: `attribute "image" is "docker.io/pay", which does not match "registry.internal/*"`},
		{name: "missing attribute never matches", req: aud(sa("pay", "api", "attr:namespace", "payments"), "https://attr.example"),
			want: policy.DenyTarget, reason: `the workload has no attribute "image"`},
		{name: "missing attribute never matches *", req: aud(sa("pay", "api"), "https://attr-any.example"),
			want: policy.DenyTarget, reason: `no attribute "team"`},
		{name: "empty attribute value matches *", req: aud(sa("pay", "api", "attr:team", ""), "https://attr-any.example"),
			want: policy.Allow, rule: "attr-any"},
		{name: "attributes are case-sensitive", req: aud(sa("pay", "api", "attr:namespace", "Payments", "attr:image", "registry.internal/x"), "https://attr.example"),
			want: policy.DenyTarget},

		// Trust domains.
		{name: "trust domain listed", req: aud(&attest.Workload{Upstream: "spiffe", Subject: "spiffe://prod.example/api", Attributes: map[string]string{"trust_domain": "prod.example"}}, "https://td.example"),
			want: policy.Allow, rule: "td"},
		{name: "trust domain not listed", req: aud(&attest.Workload{Upstream: "spiffe", Subject: "spiffe://prod.example/api", Attributes: map[string]string{"trust_domain": "dev.example"}}, "https://td.example"),
			want: policy.DenyNoRule, reason: `trust domain "dev.example" is not listed`},
		{name: "trust domain missing", req: aud(&attest.Workload{Upstream: "spiffe", Subject: "spiffe://prod.example/api"}, "https://td.example"),
			want: policy.DenyNoRule, reason: "no trust_domain attribute"},

		// Resources and audiences.
		{name: "v0: audiences are granted as resources", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res", "api"), Resources: []string{"https://api.example"}})
		}, want: policy.Allow, rule: "v0-aud", check: grants("https://api.example")},
		{name: "resources are checked against resources", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res2", "api"), Audiences: []string{"https://aud-only.example"}, Resources: []string{"https://res.example/api"}, Scopes: []string{"read"}})
		}, want: policy.Allow, rule: "with-res", check: grants("https://aud-only.example", "https://res.example/api")},
		{name: "with resources, audiences are not resources", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res2", "api"), Resources: []string{"https://aud-only.example"}})
		}, want: policy.DenyTarget, reason: `no rule grants target "https://aud-only.example"`},
		{name: "resources are not audiences", req: aud(sa("res2", "api"), "https://res.example/api"),
			want: policy.DenyTarget, reason: `"https://res.example/api"`},
		{name: "a rule with resources only", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res2", "api"), Resources: []string{"https://res-only.example/"}})
		}, want: policy.Allow, rule: "res-only"},
		{name: "deny by resource and scope", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res2", "api"), Resources: []string{"https://res.example/api"}, Scopes: []string{"delete"}})
		}, want: policy.DenyRule, rule: "no-res-delete", reason: `for target "https://res.example/api" with scope "delete"`},
		{name: "deny by resource does not cover an audience of that name", req: func() policy.Request {
			return at(policy.Request{Workload: sa("res2", "api"), Audiences: []string{"https://res.example/api"}, Scopes: []string{"delete"}})
		}, want: policy.DenyTarget},

		// What the token carries.
		{name: "copy_attributes", req: aud(sa("copy", "api"), "https://copy.example"), want: policy.Allow, rule: "copy",
			check: func(t *testing.T, d policy.Decision) {
				if !slices.Equal(d.CopyAttributes, []string{"namespace", "pod_uid"}) || d.MaxTTL != 2*time.Minute || d.RequireSenderConstraint {
					t.Errorf("copy=%q ttl=%v sender=%v", d.CopyAttributes, d.MaxTTL, d.RequireSenderConstraint)
				}
			}},
		{name: "require_sender_constraint refuses unconstrained tokens", req: aud(sa("copy", "api"), "https://mtls.example"),
			want: policy.DenySenderConstraint, reason: `rule "mtls-only" grants the request only as a sender-constrained token`},
		{name: "require_sender_constraint allows constrained tokens", req: with(aud(sa("copy", "api"), "https://mtls.example"), func(r *policy.Request) { r.SenderConstrained = true }),
			want: policy.Allow, rule: "mtls-only", check: func(t *testing.T, d policy.Decision) {
				if !d.RequireSenderConstraint || d.CopyAttributes != nil {
					t.Errorf("sender=%v copy=%q", d.RequireSenderConstraint, d.CopyAttributes)
				}
			}},
		{name: "clients refuses a request without client authentication", req: aud(sa("copy", "api"), "https://deploy.example"),
			want: policy.DenyClient, reason: `rule "ci-clients-only" grants only to an authenticated client, and the client did not authenticate`},
		{name: "clients refuses an unauthenticated client_id that matches", req: with(aud(sa("copy", "api"), "https://deploy.example"), func(r *policy.Request) { r.ClientID = "ci-runner" }),
			want: policy.DenyClient, reason: "did not authenticate"},
		{name: "clients refuses an authenticated client it does not list", req: with(aud(sa("copy", "api"), "https://deploy.example"), func(r *policy.Request) {
			r.ClientID, r.ClientAuthenticated = "laptop", true
		}), want: policy.DenyClient, reason: `does not list the authenticated client "laptop"`},
		{name: "clients grants to an authenticated client it lists", req: with(aud(sa("copy", "api"), "https://deploy.example"), func(r *policy.Request) {
			r.ClientID, r.ClientAuthenticated = "ci-runner", true
		}), want: policy.Allow, rule: "ci-clients-only"},
		{name: "clients grants to an mTLS SPIFFE client it lists", req: with(aud(sa("copy", "api"), "https://deploy.example"), func(r *policy.Request) {
			r.ClientID, r.ClientAuthenticated = "spiffe://ci.example/runner", true
		}), want: policy.Allow, rule: "ci-clients-only"},

		// Audit mode.
		{name: "audit deny is reported, never enforced", req: aud(sa("copy", "api"), "https://copy.example"), want: policy.Allow, rule: "copy",
			check: audited(policy.AuditHit{Rule: "audit-deny", Effect: policy.EffectDeny, Would: "deny_rule"})},
		{name: "audit allow is reported, never grants", req: aud(sa("copy", "api"), "https://new.example"), want: policy.DenyTarget,
			check: audited(policy.AuditHit{Rule: "audit-allow", Effect: policy.EffectAllow, Would: "allow"})},
		{name: "audit rules that do not match are not reported", req: aud(sa("copy", "api"), "https://mtls.example"), want: policy.DenySenderConstraint,
			check: audited()},

		// Lifecycle.
		{name: "expired rule stops matching", req: aud(sa("tmp", "api"), "https://tmp.example"), want: policy.DenyTarget,
			reason: `(rule "expired" lists it, but the rule expired at 2025-06-01T00:00:00Z)`},
		{name: "before expiry it matches", req: with(aud(sa("tmp", "api"), "https://tmp.example"), func(r *policy.Request) { r.Now = time.Date(2025, 5, 31, 23, 59, 59, 0, time.UTC) }),
			want: policy.Allow, rule: "expired"},
		{name: "review_by does not affect matching, RFC 3339 expiry does", req: aud(sa("tmp", "api"), "https://tmp2.example"),
			want: policy.Allow, rule: "review-overdue"},
		{name: "RFC 3339 expiry is exact", req: with(aud(sa("tmp", "api"), "https://tmp2.example"), func(r *policy.Request) { r.Now = time.Date(2025, 6, 1, 13, 0, 0, 0, time.UTC) }),
			want: policy.DenyNoRule, reason: "expired"},
		{name: "zero Now is refused, never read as no expiry", req: with(aud(sa("tmp", "api"), "https://tmp.example"), func(r *policy.Request) { r.Now = time.Time{} }),
			want: policy.DenyRequest, reason: "Request.Now is zero"},

		// Delegation.
		{name: "direct request skips delegation-only rules", req: aud(sa("orders", "api"), "https://inventory.example"), want: policy.Allow, rule: "orders-direct"},
		{name: "actor allowed", req: delegated(sa("orders", "api"), gateway, 1, "https://inventory.example"), want: policy.Allow, rule: "gw-for-orders"},
		{name: "actor attributes must match", req: delegated(sa("orders", "api"), sa("gateway", "api"), 1, "https://inventory.example"),
			want: policy.DenyActor, reason: `the actor (upstream "k8s" subject "system:serviceaccount:gateway:api") is not among the rule's actors`},
		{name: "actor refused", req: delegated(sa("orders", "api"), sa("web", "x"), 1, "https://inventory.example"),
			want: policy.DenyActor, reason: "is not among the rule's actors"},
		{name: "default depth is a direct actor only", req: delegated(sa("orders", "api"), gateway, 2, "https://inventory.example"),
			want: policy.DenyActor, reason: "delegation depth 2 exceeds max_delegation_depth 1"},
		{name: "depth within max_delegation_depth", req: delegated(sa("orders", "api"), gateway, 2, "https://chain.example"), want: policy.Allow, rule: "chain"},
		{name: "depth beyond max_delegation_depth", req: delegated(sa("orders", "api"), gateway, 3, "https://chain.example"),
			want: policy.DenyActor, reason: "delegation depth 3 exceeds max_delegation_depth 2"},
		{name: "rules without actors refuse delegated requests", req: delegated(sa("orders", "api"), gateway, 1, "https://direct.example"),
			want: policy.DenyActor, reason: `rule "orders-direct": the rule does not allow delegation (it lists no actors)`},
		{name: "deny with actors refuses a matching actor", req: delegated(sa("orders", "api"), batch, 1, "https://inventory.example"),
			want: policy.DenyRule, rule: "no-batch-actor"},
		{name: "deny with actors ignores direct requests", req: aud(sa("orders", "api"), "https://direct.example"), want: policy.Allow, rule: "orders-direct"},
		{name: "may_act honoured", req: delegated(sa("orders", "api", "claim:may_act", map[string]any{"sub": gateway.ID, "iss": gateway.Issuer}), gateway, 1, "https://inventory.example"),
			want: policy.Allow, rule: "gw-for-orders"},
		{name: "may_act mismatch refuses even if a rule would allow", req: delegated(sa("orders", "api", "claim:may_act", map[string]any{"sub": "other/actor"}), gateway, 1, "https://inventory.example"),
			want: policy.DenyActor, reason: `may_act names "other/actor", not the actor "gateway/api"`},
		{name: "may_act issuer mismatch", req: delegated(sa("orders", "api", "claim:may_act", map[string]any{"sub": gateway.ID, "iss": "https://other"}), gateway, 1, "https://inventory.example"),
			want: policy.DenyActor, reason: `issuer "https://other"`},
		{name: "may_act malformed", req: delegated(sa("orders", "api", "claim:may_act", "gateway/api"), gateway, 1, "https://inventory.example"),
			want: policy.DenyActor, reason: "may_act claim is malformed"},
		{name: "may_act without sub", req: delegated(sa("orders", "api", "claim:may_act", map[string]any{"iss": gateway.Issuer}), gateway, 1, "https://inventory.example"),
			want: policy.DenyActor, reason: "sub missing or not a string"},
		{name: "may_act is irrelevant without an actor", req: aud(sa("orders", "api", "claim:may_act", map[string]any{"sub": "x"}), "https://inventory.example"),
			want: policy.Allow, rule: "orders-direct"},
		{name: "an actor needs a depth", req: delegated(sa("orders", "api"), gateway, 0, "https://inventory.example"), want: policy.DenyRequest},
		{name: "a depth needs an actor", req: delegated(sa("orders", "api"), nil, 1, "https://inventory.example"), want: policy.DenyRequest},

		// Request fields in conditions.
		{name: "absent client_id is an error, not an empty string (allow)", req: aud(sa("client", "api"), "https://client.example"),
			want: policy.DenyNoRule, reason: "request.client_id is absent"},
		{name: "client_id present", req: with(aud(sa("client", "api"), "https://client.example"), func(r *policy.Request) { r.ClientID = "good" }),
			want: policy.Allow, rule: "client-allow"},
		{name: "absent client_id is an error, not an empty string (deny)", req: aud(sa("client", "api"), "https://client-strict.example"),
			want: policy.DenyRule, rule: "client-deny"},
		{name: "trusted client", req: with(aud(sa("client", "api"), "https://client-strict.example"), func(r *policy.Request) { r.ClientID = "trusted" }),
			want: policy.Allow, rule: "client-strict"},
		{name: "actor in a condition", req: delegated(sa("client", "api", "attr:namespace", "gateway"), gateway, 1, "https://actor-cel.example"),
			want: policy.Allow, rule: "actor-cel"},
		{name: "actor in a condition, other namespace", req: delegated(sa("client", "api", "attr:namespace", "client"), gateway, 1, "https://actor-cel.example"),
			want: policy.DenyNoRule, reason: "its condition is false"},
		{name: "scopes and token type in a condition", req: with(aud(sa("client", "api"), "https://scoped.example"), func(r *policy.Request) {
			r.Scopes = []string{"read", "write"}
			r.RequestedTokenType = attest.TypeAccessToken
		}), want: policy.Allow, rule: "scoped-cel"},
		{name: "absent token type fails the condition", req: with(aud(sa("client", "api"), "https://scoped.example"), func(r *policy.Request) { r.Scopes = []string{"write"} }),
			want: policy.DenyNoRule, reason: "request.requested_token_type is absent"},
		{name: "now in a condition", req: with(aud(sa("client", "api"), "https://scoped.example"), func(r *policy.Request) {
			r.Scopes = []string{"write"}
			r.RequestedTokenType = attest.TypeAccessToken
			r.Now = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
		}), want: policy.DenyNoRule, reason: "its condition is false"},
		{name: "condition short-circuits without the absent field", req: with(aud(sa("client", "api"), "https://scoped.example"), func(r *policy.Request) { r.Scopes = []string{"read"} }),
			want: policy.Allow, rule: "scoped-cel"},

		// Empty fields never match more.
		{name: "empty subject", req: aud(&attest.Workload{Upstream: "k8s"}, "https://attr-any.example"), want: policy.DenyRequest},
		{name: "empty upstream", req: aud(&attest.Workload{Subject: "system:serviceaccount:pay:api"}, "https://attr-any.example"), want: policy.DenyRequest},
		{name: "actor without subject", req: delegated(sa("orders", "api"), &attest.Workload{Upstream: "k8s"}, 1, "https://inventory.example"), want: policy.DenyRequest},
		{name: "nil attributes and claims", req: aud(&attest.Workload{Upstream: "k8s", Subject: "system:serviceaccount:pay:api"}, "https://cel.example"),
			want: policy.DenyRule, rule: "cel-deny"},
	}
}

func grants(targets ...string) func(*testing.T, policy.Decision) {
	return func(t *testing.T, d policy.Decision) {
		if !slices.Equal(d.Audiences, targets) {
			t.Errorf("granted %q, want %q", d.Audiences, targets)
		}
	}
}

func audited(hits ...policy.AuditHit) func(*testing.T, policy.Decision) {
	return func(t *testing.T, d policy.Decision) {
		if !slices.Equal(d.Audited, hits) {
			t.Errorf("audited %+v, want %+v", d.Audited, hits)
		}
	}
}

func TestRuleFeatures(t *testing.T) {
	p := loadFeatures(t)
	for _, tc := range featureCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Decide(tc.req())
			if d.Outcome != tc.want || d.Rule != tc.rule {
				t.Fatalf("got %s rule=%q (%s), want %s rule=%q", d.Outcome, d.Rule, d.Reason, tc.want, tc.rule)
			}
			if d.Reason == "" || strings.ContainsAny(d.Reason, "\n\r") {
				t.Errorf("Reason %q is not one sentence", d.Reason)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("Reason %q does not contain %q", d.Reason, tc.reason)
			}
			if !d.Allowed() && (d.Audiences != nil || d.Scopes != nil || d.MaxTTL != 0 || d.CopyAttributes != nil || d.RequireSenderConstraint) {
				t.Errorf("a refusal grants something: %+v", d)
			}
			if d.Trace != nil {
				t.Error("Decide filled a trace")
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

// Explain decides exactly as Decide does, over every feature case.
func TestExplainDecidesAsDecide(t *testing.T) {
	p := loadFeatures(t)
	for _, tc := range featureCases() {
		req := tc.req()
		d, e := p.Decide(req), p.Explain(req)
		if d.Outcome != e.Outcome || d.Rule != e.Rule || d.Reason != e.Reason || !slices.Equal(d.Audited, e.Audited) ||
			!slices.Equal(d.Audiences, e.Audiences) || !slices.Equal(d.Scopes, e.Scopes) || d.MaxTTL != e.MaxTTL {
			t.Errorf("%s:\nDecide  %s %q %q %+v\nExplain %s %q %q %+v", tc.name, d.Outcome, d.Rule, d.Reason, d.Audited, e.Outcome, e.Rule, e.Reason, e.Audited)
		}
		decided := 0
		for _, s := range e.Trace {
			if s.Decided {
				decided++
				if s.Rule != e.Rule && e.Rule != "" {
					t.Errorf("%s: step %+v decided, but the rule is %q", tc.name, s, e.Rule)
				}
			}
			if s.Detail == "" || s.Verdict == "" || strings.ContainsAny(s.Detail, "\n\r") {
				t.Errorf("%s: bad step %+v", tc.name, s)
			}
		}
		if decided != 1 {
			t.Errorf("%s: %d decided steps in %+v", tc.name, decided, e.Trace)
		}
	}
}

func TestRulesExposeFeatures(t *testing.T) {
	p := loadFeatures(t)
	rules := make(map[string]policy.Rule)
	for _, r := range p.Rules() {
		rules[r.Name] = r
	}
	if r := rules["cel-allow"]; r.When != `workload.attributes["env"] == "prod"` || r.Owner != "payments" || r.Mode != policy.ModeEnforce {
		t.Errorf("cel-allow: %+v", r)
	}
	if r := rules["attr-glob"]; !maps.Equal(r.Attributes, map[string]string{"namespace": "pay*", "image": "registry.internal/*"}) {
		t.Errorf("attr-glob: %+v", r.Attributes)
	}
	if r := rules["td"]; !slices.Equal(r.TrustDomains, []string{"prod.example"}) {
		t.Errorf("td: %+v", r)
	}
	if r := rules["with-res"]; !slices.Equal(r.Resources, []string{"https://res.example/api"}) {
		t.Errorf("with-res: %+v", r)
	}
	if r := rules["copy"]; !slices.Equal(r.CopyAttributes, []string{"namespace", "pod_uid"}) {
		t.Errorf("copy: %+v", r)
	}
	if r := rules["mtls-only"]; !r.RequireSenderConstraint {
		t.Errorf("mtls-only: %+v", r)
	}
	if r := rules["audit-deny"]; r.Mode != policy.ModeAudit || r.Effect != policy.EffectDeny {
		t.Errorf("audit-deny: %+v", r)
	}
	if r := rules["expired"]; !r.Expires.Equal(time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expired: %v", r.Expires)
	}
	if r := rules["review-overdue"]; !r.ReviewBy.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || !r.Expires.Equal(time.Date(2025, 6, 1, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("review-overdue: %v %v", r.ReviewBy, r.Expires)
	}
	gw := rules["gw-for-orders"]
	if len(gw.Actors) != 1 || gw.MaxDelegationDepth != 1 || !slices.Equal(gw.Actors[0].Subjects, []string{"system:serviceaccount:gateway:*"}) ||
		!maps.Equal(gw.Actors[0].Attributes, map[string]string{"namespace": "gateway"}) {
		t.Errorf("gw-for-orders: %+v", gw)
	}
	if r := rules["chain"]; r.MaxDelegationDepth != 2 {
		t.Errorf("chain: %+v", r)
	}
	if r := rules["no-batch-actor"]; r.MaxDelegationDepth != 0 || len(r.Actors) != 1 {
		t.Errorf("no-batch-actor: %+v", r)
	}
	if got := p.SensitiveAudiences(); !slices.Equal(got, []string{"https://vault.*"}) {
		t.Errorf("sensitive: %q", got)
	}
}

// An empty or missing expectation never widens access: empty request values grant
// nothing, missing data never satisfies a condition, and a policy without rules
// refuses. (Empty lists in the policy are load errors: TestParseFeatureErrors.)
func TestEmptyNeverWidens(t *testing.T) {
	p := loadFeatures(t)
	for _, tc := range []struct {
		name string
		req  policy.Request
		want policy.Outcome
	}{
		{"empty audience", policy.Request{Workload: sa("res", "api"), Audiences: []string{""}}, policy.DenyTarget},
		{"empty resource", policy.Request{Workload: sa("res", "api"), Resources: []string{""}}, policy.DenyTarget},
		{"empty scope", policy.Request{Workload: sa("res2", "api"), Audiences: []string{"https://aud-only.example"}, Scopes: []string{""}}, policy.DenyScope},
		{"no attributes", policy.Request{Workload: &attest.Workload{Upstream: "k8s", Subject: "system:serviceaccount:pay:api"}, Audiences: []string{"https://attr-any.example"}}, policy.DenyTarget},
		{"no claims: the allow condition fails, the deny condition applies", policy.Request{Workload: &attest.Workload{Upstream: "k8s", Subject: "system:serviceaccount:pay:api", Attributes: map[string]string{"env": "prod"}}, Audiences: []string{"https://cel.example"}}, policy.DenyRule},
		{"empty trust domain", policy.Request{Workload: &attest.Workload{Upstream: "spiffe", Subject: "spiffe://prod.example/a", Attributes: map[string]string{"trust_domain": ""}}, Audiences: []string{"https://td.example"}}, policy.DenyNoRule},
		{"empty actor", policy.Request{Workload: sa("orders", "api"), Actor: &attest.Workload{}, DelegationDepth: 1, Audiences: []string{"https://inventory.example"}}, policy.DenyRequest},
		{"negative depth", policy.Request{Workload: sa("orders", "api"), DelegationDepth: -1, Audiences: []string{"https://inventory.example"}}, policy.DenyRequest},
	} {
		if d := p.Decide(at(tc.req)); d.Outcome != tc.want {
			t.Errorf("%s: got %s (%s), want %s", tc.name, d.Outcome, d.Reason, tc.want)
		}
	}
	empty := mustParse(t, "")
	if d := empty.Decide(at(policy.Request{Workload: sa("pay", "api"), Audiences: []string{"x"}})); d.Allowed() {
		t.Error("an empty policy allows")
	}
	if d := empty.DecideAdmin(policy.AdminRequest{Caller: sa("pay", "api"), Action: policy.ActionList, Now: testNow}); d.Allowed() {
		t.Error("an empty policy grants admin rights")
	}
}

// Conditions run concurrently on one Policy (go test -race).
func TestDecideConcurrentConditions(t *testing.T) {
	p := loadFeatures(t)
	cases := featureCases()
	want := make([]policy.Outcome, len(cases))
	for i, tc := range cases {
		want[i] = p.Decide(tc.req()).Outcome
	}
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 50 {
				i := (g*31 + j) % len(cases)
				if got := p.Decide(cases[i].req()).Outcome; got != want[i] {
					t.Errorf("%s: %s, then %s", cases[i].name, want[i], got)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// A condition that would run long stops at the cost limit, which is an
// evaluation error: no match for an allow rule, a refusal for a deny rule.
func TestConditionCostLimit(t *testing.T) {
	p := mustParse(t, `rules:
  - name: slow-allow
    effect: allow
    upstreams: [u]
    subjects: ["*"]
    audiences: [a]
    when: workload.claims.big.all(x, workload.claims.big.all(y, x + y >= 0.0))
  - name: slow-deny
    effect: deny
    upstreams: [u]
    subjects: ["*"]
    audiences: [d]
    when: workload.claims.big.exists(x, workload.claims.big.exists(y, x + y < 0.0))
  - {name: d-allow, effect: allow, upstreams: [u], subjects: ["*"], audiences: [d]}
`)
	big := make([]any, 2000)
	for i := range big {
		big[i] = float64(i)
	}
	w := &attest.Workload{Upstream: "u", Subject: "s", Claims: map[string]any{"big": big}}
	// CEL's cost limit bounds the work (deterministically, whatever the machine's
	// speed): both conditions are cut off and say so.
	d := p.Decide(at(policy.Request{Workload: w, Audiences: []string{"a"}}))
	if d.Allowed() || !strings.Contains(d.Reason, "cost limit") {
		t.Errorf("slow allow: %s %s", d.Outcome, d.Reason)
	}
	d = p.Decide(at(policy.Request{Workload: w, Audiences: []string{"d"}}))
	if d.Outcome != policy.DenyRule || !strings.Contains(d.Reason, "cost limit") {
		t.Errorf("slow deny: %s %s", d.Outcome, d.Reason)
	}
	// Small inputs stay well within the limit.
	w.Claims["big"] = big[:10]
	if d := p.Decide(at(policy.Request{Workload: w, Audiences: []string{"a"}})); !d.Allowed() {
		t.Errorf("small allow: %s", d.Reason)
	}
}
