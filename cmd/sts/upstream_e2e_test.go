package main

import (
	"os"
	"strings"
	"testing"
)

// upstreamPolicy keys a grant on the namespace attribute alone: what the
// Kubernetes preset derives must be trustworthy for it to be safe.
const upstreamPolicy = `rules:
  - name: payments-by-namespace
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:*"]
    attributes: {namespace: payments}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
  - name: dev-by-namespace
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:*"]
    attributes: {namespace: dev}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
`

// upstreamSetup makes cluster-a a dev cluster (subjects bounded to the dev
// namespace, the Kubernetes preset) with the extra upstream keys given, and
// writes the audit events to a file.
func upstreamSetup(t *testing.T, extra string) *e2e {
	t.Helper()
	e := setup(t, "")
	cfg, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.write("sts.yaml", strings.Replace(string(cfg), "    jwks_file: cluster-a-jwks.json\n",
		"    jwks_file: cluster-a-jwks.json\n    subjects: [\"system:serviceaccount:dev:*\"]\n    preset: kubernetes\n"+extra, 1)+
		"audit: {path: audit.jsonl}\n")
	e.write("policy.yaml", upstreamPolicy)
	return e
}

// k8sClaims sets the kubernetes.io claim of a pod-bound token.
func k8sClaims(ns, sa string) func(map[string]any) {
	return func(c map[string]any) {
		c["kubernetes.io"] = map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]any{"name": sa, "uid": "sa-uid"},
			"pod":            map[string]any{"name": sa + "-7d9f", "uid": "pod-uid"},
		}
	}
}

// TestE2EUpstreamCannotAssertForeignNamespace is the issue #15 escalation,
// through the real binary and the real attestation: upstream cluster-a may
// assert only dev's service accounts, yet a token with sub
// system:serviceaccount:dev:api could carry kubernetes.io.namespace=payments,
// and the preset mapped it, so the rule keyed on namespace=payments granted it.
// The preset now derives Kubernetes attributes only from a token whose claim
// agrees with its bounded subject.
func TestE2EUpstreamCannotAssertForeignNamespace(t *testing.T) {
	e := upstreamSetup(t, "")
	e.start()

	// The dev workload, honest: granted by the dev rule.
	resp, err := e.exchange(e.a.Token(t, "system:serviceaccount:dev:api", k8sClaims("dev", "api")))
	if err != nil {
		t.Fatalf("honest dev token: %v", err)
	}
	if resp.AccessToken == "" {
		t.Fatal("no token")
	}
	// The dev upstream asserting payments in its nested claim: no namespace
	// attribute, so neither rule matches.
	if _, err := e.exchange(e.a.Token(t, "system:serviceaccount:dev:api", k8sClaims("payments", "api"))); err == nil || !strings.Contains(err.Error(), "invalid_request") {
		t.Fatalf("dev token claiming namespace payments: %v (want refused)", err)
	}
	// And the payments subject itself is outside the upstream's subjects.
	if _, err := e.exchange(e.a.Token(t, "system:serviceaccount:payments:api", k8sClaims("payments", "api"))); err == nil {
		t.Fatal("payments subject from the dev upstream was granted")
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	events := auditEvents(t, e.path("audit.jsonl"))
	var rules, conditions []string
	for _, ev := range events {
		if ev["event"] != "exchange" {
			continue
		}
		r, _ := ev["rule"].(string)
		c, _ := ev["upstream_condition"].(string)
		rules, conditions = append(rules, r), append(conditions, c)
	}
	// Issued by the dev rule; refused for no rule; refused by the subjects.
	if strings.Join(rules, ",") != "dev-by-namespace,," || strings.Join(conditions, ",") != ",,subjects" {
		t.Fatalf("audit rules %q, conditions %q\n%v", rules, conditions, events)
	}
}

// TestE2EUpstreamConditionAudited: an upstream's CEL condition and attribute
// bounds refuse tokens before policy, and the audit event names the upstream
// and the condition.
func TestE2EUpstreamConditionAudited(t *testing.T) {
	e := upstreamSetup(t, "    condition: 'attributes.service_account != \"deployer\" && has(claims[\"kubernetes.io\"].pod)'\n"+
		"    attribute_bounds: {pod: [\"api-*\", \"web-*\", \"deployer-*\"]}\n"+
		"    required_claims: {/kubernetes.io/serviceaccount/uid: sa-uid}\n")
	runBin(t, 0, "sts", "check-config", "--config", e.cfg)
	e.start()
	if _, err := e.exchange(e.a.Token(t, "system:serviceaccount:dev:api", k8sClaims("dev", "api"))); err != nil {
		t.Fatalf("token within the condition: %v", err)
	}
	refusals := map[string]string{
		"condition":            e.a.Token(t, "system:serviceaccount:dev:deployer", k8sClaims("dev", "deployer")),
		"attribute_bounds.pod": e.a.Token(t, "system:serviceaccount:dev:batch", k8sClaims("dev", "batch")),
		"required_claims./kubernetes.io/serviceaccount/uid": e.a.Token(t, "system:serviceaccount:dev:api", k8sClaims("dev", "api"), func(c map[string]any) {
			c["kubernetes.io"].(map[string]any)["serviceaccount"].(map[string]any)["uid"] = "other"
		}),
	}
	for check, tok := range refusals {
		if _, err := e.exchange(tok); err == nil || !strings.Contains(err.Error(), "invalid_request") {
			t.Fatalf("%s: %v (want refused)", check, err)
		}
	}
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range auditEvents(t, e.path("audit.jsonl")) {
		c, _ := ev["upstream_condition"].(string)
		if c == "" {
			continue
		}
		reason, _ := ev["reason"].(string)
		if ev["refused_by_upstream"] != "cluster-a" || ev["outcome"] != "refused" || !strings.Contains(reason, "upstream condition "+c) {
			t.Fatalf("audit event %v", ev)
		}
		seen[c] = true
	}
	for check := range refusals {
		if !seen[check] {
			t.Errorf("no audit event names %s", check)
		}
	}
	// check-config type-checks the condition.
	e.write("sts.yaml", strings.Replace(readFile(t, e.cfg), "attributes.service_account !=", "attributes.service_acount !=", 1))
	out := runBin(t, 1, "sts", "check-config", "--config", e.cfg)
	if !strings.Contains(out, `upstreams[0].condition: reads attribute "service_acount", which this upstream never maps`) {
		t.Fatalf("check-config:\n%s", out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
