package policy_test

import (
	"fmt"
	"time"

	"github.com/safeconduct/safeconduct/attest"
	"github.com/safeconduct/safeconduct/policy"
)

func Example() {
	p, err := policy.Parse("policy.yaml", []byte(`
rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read, ledger.write]
    max_ttl: 10m
  - name: no-debug-pods
    effect: deny
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:debug-*"]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.ValidateUpstreams([]string{"cluster-a"}); err != nil {
		fmt.Println(err)
		return
	}

	api := &attest.Workload{Upstream: "cluster-a", Subject: "system:serviceaccount:payments:api"}
	d := p.Decide(policy.Request{
		Workload:  api,
		Audiences: []string{"https://ledger.internal"},
		Scopes:    []string{"ledger.read"},
		Now:       time.Now(),
	})
	fmt.Println(d.Outcome, d.Rule, d.Audiences, d.Scopes, d.MaxTTL)

	d = p.Decide(policy.Request{
		Workload:  api,
		Audiences: []string{"https://ledger.internal"},
		Scopes:    []string{"ledger.admin"},
		Now:       time.Now(),
	})
	fmt.Printf("%s: %s\n", d.Outcome, d.Reason)

	debug := &attest.Workload{Upstream: "cluster-a", Subject: "system:serviceaccount:payments:debug-shell"}
	d = p.Decide(policy.Request{Workload: debug, Audiences: []string{"https://ledger.internal"}, Now: time.Now()})
	fmt.Printf("%s: %s\n", d.Outcome, d.Reason)
	// Output:
	// allow payments-to-ledger [https://ledger.internal] [ledger.read] 10m0s
	// deny_scope: no rule granting the requested targets grants scope "ledger.admin"
	// deny_rule: deny rule "no-debug-pods" refuses upstream "cluster-a" subject "system:serviceaccount:payments:debug-shell"
}

func ExampleLoadError() {
	_, err := policy.Parse("policy.yaml", []byte(`
rules:
  - name: payments-to-ledger
    effect: allow
    upstreams: [cluster-a]
    subject: ["system:serviceaccount:payments:*"]
    audiences: []
    max_ttl: 10
`))
	fmt.Println(err)
	// Output:
	// policy.yaml:3: rules[0].subjects: at least one subject pattern is required
	// policy.yaml:6: rules[0].subject: unknown key (did you mean "subjects"?)
	// policy.yaml:7: rules[0].audiences: an allow rule must grant at least one audience
	// policy.yaml:8: rules[0].max_ttl: "10" is not a duration (write e.g. 10m or 1h30m)
}

func ExamplePolicy_Explain() {
	p, err := policy.Parse("policy.yaml", []byte(`
rules:
  - name: gateway-for-orders
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:orders:*"]
    audiences: ["https://inventory.internal"]
    actors:
      - upstreams: [cluster-a]
        subjects: ["system:serviceaccount:gateway:*"]
  - name: orders-prod
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:orders:*"]
    audiences: ["https://inventory.internal"]
    when: workload.attributes["env"] == "prod"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	orders := &attest.Workload{Upstream: "cluster-a", Subject: "system:serviceaccount:orders:api", Attributes: map[string]string{"env": "dev"}}
	d := p.Explain(policy.Request{
		Workload:  orders,
		Audiences: []string{"https://inventory.internal"},
		Now:       time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC),
	})
	fmt.Printf("%s: %s\n", d.Outcome, d.Reason)
	for _, s := range d.Trace {
		fmt.Printf("  %-18s %-14s %s\n", s.Rule, s.Verdict, s.Detail)
	}
	// Output:
	// deny_no_rule: rule "orders-prod" grants every requested target and scope, but its condition is false
	//   gateway-for-orders delegated_only the rule applies to delegations only (it lists actors), and the request has no actor
	//   orders-prod        when_false     its condition is false
	//                      refused        rule "orders-prod" grants every requested target and scope, but its condition is false
}

func ExamplePolicy_DecideAdmin() {
	p, err := policy.Parse("policy.yaml", []byte(`
admin:
  - name: payments-oncall
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:oncall"]
    actions: [revoke, list]
    within_upstreams: [cluster-a]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	oncall := &attest.Workload{Upstream: "cluster-a", Subject: "system:serviceaccount:payments:oncall"}
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, req := range []policy.AdminRequest{
		{Caller: oncall, Action: policy.ActionRevoke, TargetUpstreams: []string{"cluster-a"}, Now: now},
		{Caller: oncall, Action: policy.ActionRevoke, Now: now}, // every upstream
		{Caller: oncall, Action: policy.ActionRotateKeys, Now: now},
	} {
		d := p.DecideAdmin(req)
		fmt.Printf("%s: %s\n", d.Outcome, d.Reason)
	}
	// Output:
	// allow: admin rule "payments-oncall" grants action "revoke" on upstreams ["cluster-a"]
	// deny_target: no admin rule grants action "revoke" on every upstream to caller upstream "cluster-a" subject "system:serviceaccount:payments:oncall" (nearest: admin rule "payments-oncall": does not grant actions on every upstream (within_upstreams is not "*"))
	// deny_action: no admin rule grants action "rotate_keys" on every upstream to caller upstream "cluster-a" subject "system:serviceaccount:payments:oncall" (nearest: admin rule "payments-oncall": does not grant action "rotate_keys")
}
