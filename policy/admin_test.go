package policy_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

const adminPolicy = `
admin:
  - name: security-team
    owner: security
    upstreams: [k8s]
    subjects: ["system:serviceaccount:security:*"]
    actions: [revoke, block, lift, list, read_feed]
    within_upstreams: ["*"]
  - name: payments-ops
    owner: payments
    upstreams: [k8s]
    subjects: ["system:serviceaccount:payments:ops"]
    actions: [revoke, list]
    within_upstreams: [k8s]
    when: request.action == "list" || now < timestamp("2025-07-01T00:00:00Z")
  - name: key-rotation
    upstreams: [k8s]
    subjects: ["system:serviceaccount:platform:keys"]
    attributes: {namespace: platform}
    actions: [rotate_keys]
    within_upstreams: ["*"]
  - name: verifiers
    upstreams: [k8s, spiffe]
    subjects: ["system:serviceaccount:*:verifier", "spiffe://prod.example/verifier"]
    trust_domains: [prod.example]
    actions: [read_feed, introspect]
    within_upstreams: ["*"]
    expires: 2025-12-31
rules:
  - {name: some-rule, effect: deny, upstreams: [k8s], subjects: ["*"]}
`

func TestDecideAdmin(t *testing.T) {
	p := mustParse(t, adminPolicy)
	if err := p.ValidateUpstreams([]string{"k8s", "spiffe"}); err != nil {
		t.Fatal(err)
	}
	verifier := sa("payments", "verifier", "attr:trust_domain", "prod.example")
	tests := []struct {
		name    string
		req     policy.AdminRequest
		want    policy.Outcome
		rule    string
		reason  string
		explain []string // verdicts of the trace, in order
	}{
		{name: "security revokes anywhere", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionRevoke},
			want: policy.Allow, rule: "security-team", explain: []string{"applies", "subject", "subject", "subject"}},
		{name: "security revokes in named upstreams", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionBlock, TargetUpstreams: []string{"k8s", "github"}},
			want: policy.Allow, rule: "security-team"},
		{name: "team revokes within its upstream", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionRevoke, TargetUpstreams: []string{"k8s"}},
			want: policy.Allow, rule: "payments-ops", explain: []string{"subject", "applies", "subject", "subject"}},
		{name: "team cannot target another upstream", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionRevoke, TargetUpstreams: []string{"k8s", "github"}},
			want: policy.DenyTarget, reason: `upstream "github" is not within its within_upstreams`},
		{name: "no targets means all upstreams, which needs *", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionRevoke},
			want: policy.DenyTarget, reason: `within_upstreams is not "*"`},
		{name: "action not granted", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionBlock, TargetUpstreams: []string{"k8s"}},
			want: policy.DenyAction, reason: `does not grant action "block"`, explain: []string{"subject", "action", "subject", "subject", "refused"}},
		{name: "condition false", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionRevoke, TargetUpstreams: []string{"k8s"}, Now: time.Date(2025, 7, 2, 0, 0, 0, 0, time.UTC)},
			want: policy.DenyNoRule, reason: "the condition is false"},
		{name: "condition true for another action", req: policy.AdminRequest{Caller: sa("payments", "ops"), Action: policy.ActionList, TargetUpstreams: []string{"k8s"}, Now: time.Date(2025, 7, 2, 0, 0, 0, 0, time.UTC)},
			want: policy.Allow, rule: "payments-ops"},
		{name: "attributes match", req: policy.AdminRequest{Caller: sa("platform", "keys", "attr:namespace", "platform"), Action: policy.ActionRotateKeys},
			want: policy.Allow, rule: "key-rotation"},
		{name: "missing attribute", req: policy.AdminRequest{Caller: sa("platform", "keys"), Action: policy.ActionRotateKeys},
			want: policy.DenyNoRule, reason: `the workload has no attribute "namespace"`},
		{name: "trust domain", req: policy.AdminRequest{Caller: verifier, Action: policy.ActionIntrospect},
			want: policy.Allow, rule: "verifiers"},
		{name: "expired admin rule", req: policy.AdminRequest{Caller: verifier, Action: policy.ActionIntrospect, Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
			want: policy.DenyNoRule, reason: "expired"},
		{name: "other upstream", req: policy.AdminRequest{Caller: &attest.Workload{Upstream: "spiffe", Subject: "spiffe://prod.example/verifier", Attributes: map[string]string{"trust_domain": "prod.example"}}, Action: policy.ActionReadFeed},
			want: policy.Allow, rule: "verifiers"},
		{name: "default deny", req: policy.AdminRequest{Caller: sa("web", "frontend"), Action: policy.ActionList},
			want: policy.DenyNoRule, reason: `no admin rule matches caller upstream "k8s" subject "system:serviceaccount:web:frontend"`},
		{name: "unknown upstream", req: policy.AdminRequest{Caller: &attest.Workload{Upstream: "github", Subject: "repo:x"}, Action: policy.ActionList},
			want: policy.DenyNoRule, explain: []string{"refused"}},
		{name: "unknown action", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: "delete_everything"},
			want: policy.DenyRequest, reason: `unknown admin action "delete_everything"`, explain: []string{"request"}},
		{name: "empty action", req: policy.AdminRequest{Caller: sa("security", "cli")}, want: policy.DenyRequest},
		{name: "* is not a target", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionRevoke, TargetUpstreams: []string{"*"}}, want: policy.DenyRequest},
		{name: "empty target", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionRevoke, TargetUpstreams: []string{""}}, want: policy.DenyRequest},
		{name: "no caller", req: policy.AdminRequest{Action: policy.ActionList}, want: policy.DenyNoRule},
		{name: "zero Now", req: policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionList, Now: time.Time{}}, want: policy.DenyRequest, reason: "AdminRequest.Now is zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if req.Now.IsZero() && tt.name != "zero Now" {
				req.Now = testNow
			}
			d := p.DecideAdmin(req)
			if d.Outcome != tt.want || d.Rule != tt.rule {
				t.Fatalf("got %s rule=%q (%s), want %s rule=%q", d.Outcome, d.Rule, d.Reason, tt.want, tt.rule)
			}
			if d.Reason == "" || strings.Contains(d.Reason, "\n") || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Reason %q does not contain %q", d.Reason, tt.reason)
			}
			e := p.ExplainAdmin(req)
			if e.Outcome != d.Outcome || e.Rule != d.Rule || e.Reason != d.Reason {
				t.Errorf("ExplainAdmin: %s %q %q", e.Outcome, e.Rule, e.Reason)
			}
			if tt.explain != nil {
				var got []string
				for _, s := range e.Trace {
					got = append(got, s.Verdict)
				}
				if !slices.Equal(got, tt.explain) {
					t.Errorf("trace %q, want %q: %+v", got, tt.explain, e.Trace)
				}
			}
		})
	}
	var nilPolicy *policy.Policy
	if d := nilPolicy.DecideAdmin(policy.AdminRequest{Caller: sa("security", "cli"), Action: policy.ActionList, Now: testNow}); d.Allowed() {
		t.Error("a nil policy grants admin rights")
	}
}

func TestAdminRules(t *testing.T) {
	p := mustParse(t, adminPolicy)
	got := p.AdminRules()
	if len(got) != 4 {
		t.Fatalf("%d admin rules", len(got))
	}
	a := got[1]
	if a.Name != "payments-ops" || a.Owner != "payments" || a.Line != 9 || !slices.Equal(a.Actions, []string{"revoke", "list"}) ||
		!slices.Equal(a.WithinUpstreams, []string{"k8s"}) || !strings.HasPrefix(a.When, "request.action") {
		t.Errorf("%+v", a)
	}
	if w := got[0].WithinUpstreams; !slices.Equal(w, []string{"*"}) {
		t.Errorf("within %q", w)
	}
	if got[3].Expires.IsZero() || !slices.Equal(got[3].TrustDomains, []string{"prod.example"}) {
		t.Errorf("%+v", got[3])
	}
	if !slices.Equal(policy.Actions(), []string{"revoke", "block", "lift", "list", "report_change", "rotate_keys", "read_feed", "introspect"}) {
		t.Errorf("actions %q", policy.Actions())
	}
}
