package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeconduct/safeconduct/internal/testissuer"
)

const testConfig = `issuer: https://sts.example
listen: 127.0.0.1:8443
tls: {cert_file: tls.crt, key_file: tls.key}
signing: {key_dir: keys}
upstreams:
  - name: cluster-a
    kind: oidc
    issuer: https://issuer.example
    audiences: [sts]
    jwks_file: jwks.json
    preset: kubernetes
    subjects: ["system:serviceaccount:payments:*", "system:serviceaccount:gateway:*"]
policy_files: [policy.yaml]
revocation: {backend: embedded, embedded: {path: data/rev.db}}
`

const testPolicyFile = `rules:
  - name: payments-to-ledger
    effect: allow
    owner: payments-team
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    attributes: {namespace: payments}
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
    max_ttl: 10m
  - name: everyone-metrics
    effect: allow
    upstreams: [cluster-a]
    subjects: ["*"]
    audiences: ["https://metrics.internal"]
    review_by: 2020-01-01
`

func writeFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"sts.yaml": testConfig, "policy.yaml": testPolicyFile} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func stsctl(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	if code != wantCode {
		t.Fatalf("stsctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, wantCode, out.String(), errb.String())
	}
	return out.String() + errb.String()
}

func TestPolicyTest(t *testing.T) {
	dir := writeFiles(t)
	up := testissuer.New(t, "https://issuer.example")
	os.WriteFile(filepath.Join(dir, "jwks.json"), up.JWKS(), 0o600)
	k8s := func(ns string) func(map[string]any) {
		return func(c map[string]any) {
			c["kubernetes.io"] = map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": "api"}}
		}
	}
	good := filepath.Join(dir, "good.jwt")
	wrongNS := filepath.Join(dir, "wrong-ns.jwt")
	os.WriteFile(good, []byte(up.Token(t, "system:serviceaccount:payments:api", k8s("payments"))), 0o600)
	os.WriteFile(wrongNS, []byte(up.Token(t, "system:serviceaccount:payments:api", k8s("other"))), 0o600)
	cfg := filepath.Join(dir, "sts.yaml")

	out := stsctl(t, 0, "policy", "test", "--config", cfg, "--subject-token", "@"+good,
		"--audience", "https://ledger.internal", "--scope", "ledger.read", "--expect", "allow")
	for _, want := range []string{"decision:    allow", "rule:        payments-to-ledger", "namespace=payments", "max_ttl 10m0s", "* payments-to-ledger", "attested:    yes"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The attribute mapping from the config decides: another namespace is refused,
	// and the trace says why.
	out = stsctl(t, 0, "policy", "test", "--config", cfg, "--subject-token", "@"+wrongNS,
		"--audience", "https://ledger.internal", "--expect", "deny")
	if !strings.Contains(out, "namespace") || !strings.Contains(out, "deny_target") {
		t.Errorf("deny output:\n%s", out)
	}
	// The token is verified as the server does, at --now: an hour on it has expired,
	// and the refusal says so; policy is not consulted.
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	out = stsctl(t, 0, "policy", "test", "--config", cfg, "--subject-token", "@"+good, "--now", later,
		"--audience", "https://ledger.internal", "--expect", "deny")
	for _, want := range []string{"decision: deny_subject_token", "reason: subject_token: invalid token: upstream \"cluster-a\": expired at ", "attested: yes (signature and upstream limits checked with "} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "trace:") {
		t.Errorf("a token the upstream refuses reached policy:\n%s", out)
	}
	// --expect mismatch fails (for policy tests in CI).
	stsctl(t, 1, "policy", "test", "--config", cfg, "--subject-token", "@"+wrongNS, "--audience", "https://ledger.internal", "--expect", "allow")
	// JSON output.
	out = stsctl(t, 0, "policy", "test", "--policy", filepath.Join(dir, "policy.yaml"), "--upstream", "cluster-a",
		"--subject-token", "@"+good, "--audience", "https://metrics.internal", "--json")
	var v struct {
		Attested    bool
		Attestation string
		Decision    struct{ Outcome, Rule string }
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Decision.Outcome != "allow" || v.Decision.Rule != "everyone-metrics" ||
		v.Attested || !strings.Contains(v.Attestation, "claims only") {
		t.Fatalf("json %v: %s", err, out)
	}
	out = stsctl(t, 0, "policy", "test", "--policy", filepath.Join(dir, "policy.yaml"), "--upstream", "cluster-a",
		"--subject-token", "@"+good, "--audience", "https://metrics.internal", "--now", later)
	if !strings.Contains(out, "decision:    allow") || !strings.Contains(out, "attested:    no (claims only; give --config to verify like the server)") {
		t.Errorf("claims-only output:\n%s", out)
	}
	// Usage errors.
	stsctl(t, 2, "policy", "test", "--subject-token", "@"+good)
	stsctl(t, 2, "policy", "nope")
}

func TestPolicyReview(t *testing.T) {
	dir := writeFiles(t)
	metrics := filepath.Join(dir, "metrics.txt")
	os.WriteFile(metrics, []byte(`# HELP safeconduct_policy_decisions_total x
# TYPE safeconduct_policy_decisions_total counter
safeconduct_policy_decisions_total{outcome="allow",rule="payments-to-ledger"} 42
safeconduct_policy_decisions_total{outcome="deny_no_rule",rule=""} 3
`), 0o600)
	out := stsctl(t, 0, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--metrics", metrics, "--now", "2026-11-23T00:00:00Z")
	for _, want := range []string{"Usage: known", "system:serviceaccount:payments:*", "https://ledger.internal", "everyone-metrics", "unused", "review_overdue", "broad"} {
		if !strings.Contains(out, want) {
			t.Errorf("review lacks %q:\n%s", want, out)
		}
	}
	// The upstream's subjects bound what "*" grants, and the broad finding says so.
	for _, want := range []string{
		"(asserts only system:serviceaccount:payments:*, system:serviceaccount:gateway:*)",
		"effective: system:serviceaccount:gateway:*, system:serviceaccount:payments:*",
		`subject pattern "*" spans more than one namespace (gateway, payments) in cluster-a`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("review lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "payments-to-ledger: unused") {
		t.Errorf("a used rule is reported unused:\n%s", out)
	}
	// -o json is --json; -o table the text.
	jsonOut := stsctl(t, 0, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--now", "2026-11-23T00:00:00Z", "-o", "json")
	if !json.Valid([]byte(jsonOut)) || jsonOut != stsctl(t, 0, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--now", "2026-11-23T00:00:00Z", "--json") {
		t.Errorf("policy review -o json is not --json:\n%s", jsonOut)
	}
	if table := stsctl(t, 0, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--now", "2026-11-23T00:00:00Z", "--output", "table"); json.Valid([]byte(table)) || !strings.Contains(table, "everyone-metrics") {
		t.Errorf("policy review --output table:\n%s", table)
	}
	// A file that is not STS metrics is refused rather than read as "all unused".
	os.WriteFile(metrics, []byte("up 1\n"), 0o600)
	stsctl(t, 1, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--metrics", metrics)
}

// TestPolicyReviewAdminUsage: an admin rule the STS counted in
// safeconduct_policy_admin_decisions_total is not "unused"; one it did not is.
func TestPolicyReviewAdminUsage(t *testing.T) {
	dir := writeFiles(t)
	policy := testPolicyFile + `admin:
  - name: ops-revoke
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:secops:ops"]
    actions: [revoke]
    within_upstreams: ["*"]
  - name: ops-lift
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:secops:ops"]
    actions: [lift]
    within_upstreams: ["*"]
`
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := filepath.Join(dir, "metrics.txt")
	os.WriteFile(metrics, []byte(`safeconduct_policy_decisions_total{outcome="allow",rule="payments-to-ledger"} 4
safeconduct_policy_admin_decisions_total{action="revoke",outcome="allow",rule="ops-revoke"} 1
safeconduct_policy_admin_decisions_total{action="lift",outcome="allow",rule="ops-lift"} 0
safeconduct_policy_admin_decisions_total{action="block",outcome="deny_no_rule",rule=""} 2
`), 0o600)
	out := stsctl(t, 0, "policy", "review", "--config", filepath.Join(dir, "sts.yaml"), "--metrics", metrics, "--now", "2026-11-23T00:00:00Z")
	unused := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[1] == "unused" {
			unused[f[3]] = true
		}
	}
	if unused["ops-revoke"] || !unused["ops-lift"] {
		t.Errorf("admin rule usage misread (unused: %v):\n%s", unused, out)
	}
}

var update = flag.Bool("update", false, "rewrite the golden files of testdata/review")

// TestPolicyReviewJSON: the --json review of a config with a dev cluster, a prod
// cluster, GitHub Actions and SPIFFE is the documented, stable layout
// (docs/policy-review.md), byte for byte: what each upstream's subjects,
// bounds and condition allow, breadth across namespaces, ranked findings.
func TestPolicyReviewJSON(t *testing.T) {
	out := stsctl(t, 0, "policy", "review", "--config", filepath.Join("testdata", "review", "sts.yaml"), "--now", "2026-12-01T00:00:00Z", "--json")
	golden := filepath.Join("testdata", "review", "review.json.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Fatalf("review JSON differs from %s (go test -run TestPolicyReviewJSON -update, then review the diff):\n%s", golden, out)
	}
	var rv struct {
		Schema    string `json:"schema"`
		Upstreams []struct {
			Upstream      string   `json:"upstream"`
			NeverAsserted []string `json:"never_asserted"`
		} `json:"upstreams"`
		Findings []struct{ Rule, Kind, Severity, Sensitivity string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rv); err != nil {
		t.Fatal(err)
	}
	if rv.Schema != "safeconduct.policy-review/v1" {
		t.Fatalf("schema %q", rv.Schema)
	}
	kinds := map[string]bool{}
	for _, f := range rv.Findings {
		kinds[f.Rule+" "+f.Kind] = true
	}
	for _, want := range []string{"all-service-accounts broad", "payments-by-namespace broad", "payments-by-namespace unreachable", "deploy-from-main github_unpinned", "mesh-everyone broad"} {
		if !kinds[want] {
			t.Errorf("no finding %q: %v", want, kinds)
		}
	}
	if kinds["deploy-prod-env github_unpinned"] {
		t.Error("a rule pinning an environment and a protected ref is flagged")
	}
	if f := rv.Findings[0]; f.Severity != "high" || f.Sensitivity != "sensitive" {
		t.Errorf("first finding %+v, want the high, sensitive one", f)
	}
}

// TestPolicyTestUpstreamCondition: policy test attests like the server, upstream
// conditions included: a token the upstream's condition or bounds refuse never
// reaches policy, and the reason names the condition.
func TestPolicyTestUpstreamCondition(t *testing.T) {
	dir := writeFiles(t)
	cfg := strings.Replace(testConfig, "    preset: kubernetes\n",
		"    preset: kubernetes\n    condition: 'attributes.service_account == \"api\"'\n    attribute_bounds: {namespace: [payments]}\n", 1)
	os.WriteFile(filepath.Join(dir, "sts.yaml"), []byte(cfg), 0o600)
	up := testissuer.New(t, "https://issuer.example")
	os.WriteFile(filepath.Join(dir, "jwks.json"), up.JWKS(), 0o600)
	tok := func(name, ns, sa string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(up.Token(t, "system:serviceaccount:"+ns+":"+sa, func(c map[string]any) {
			c["kubernetes.io"] = map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa}}
		})), 0o600)
		return "@" + path
	}
	args := func(token string) []string {
		return []string{"policy", "test", "--config", filepath.Join(dir, "sts.yaml"), "--subject-token", token, "--audience", "https://metrics.internal"}
	}
	stsctl(t, 0, append(args(tok("ok.jwt", "payments", "api")), "--expect", "allow")...)
	for _, tc := range []struct{ file, ns, sa, says string }{
		{"sa.jwt", "payments", "worker", `upstream condition condition refused the token: not satisfied`},
		{"ns.jwt", "gateway", "api", `upstream condition attribute_bounds.namespace refused the token: attribute namespace "gateway" is outside`},
	} {
		out := stsctl(t, 0, append(args(tok(tc.file, tc.ns, tc.sa)), "--expect", "deny")...)
		if !strings.Contains(out, "deny_subject_token") || !strings.Contains(out, tc.says) || strings.Contains(out, "trace:") {
			t.Errorf("%s: output:\n%s", tc.file, out)
		}
	}
}
