package policy_test

import (
	"fmt"

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
	})
	fmt.Println(d.Outcome, d.Rule, d.Audiences, d.Scopes, d.MaxTTL)

	d = p.Decide(policy.Request{
		Workload:  api,
		Audiences: []string{"https://ledger.internal"},
		Scopes:    []string{"ledger.admin"},
	})
	fmt.Printf("%s: %s\n", d.Outcome, d.Reason)

	debug := &attest.Workload{Upstream: "cluster-a", Subject: "system:serviceaccount:payments:debug-shell"}
	d = p.Decide(policy.Request{Workload: debug, Audiences: []string{"https://ledger.internal"}})
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
	// policy.yaml:3: rule "payments-to-ledger": subjects: at least one subject pattern is required
	// policy.yaml:6: rule "payments-to-ledger": unknown key "subject" (rule keys are name, effect, upstreams, subjects, audiences, scopes, max_ttl)
	// policy.yaml:7: rule "payments-to-ledger": audiences: an allow rule must grant at least one audience
	// policy.yaml:8: rule "payments-to-ledger": max_ttl: "10" is not a duration (write e.g. 10m or 1h30m)
}
