package issuer

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
)

const delegationPolicy = `rules:
  - name: gateway-for-payments
    effect: allow
    upstreams: [cluster-a, self]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal", "sts-self"]
    scopes: [ledger.read]
    max_ttl: 10m
    actors:
      - upstreams: [cluster-a]
        subjects: ["system:serviceaccount:gateway:*"]
    max_delegation_depth: 2
  - name: payments-direct
    effect: allow
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:*"]
    audiences: ["https://ledger.internal"]
    scopes: [ledger.read]
    copy_attributes: [namespace, service_account, pod_uid]
  - name: dry-run-deny-payments
    effect: deny
    mode: audit
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:payments:api"]
`

// startDelegationSTS: cluster-a with the kubernetes preset and issuer breadth, and
// the STS itself as the upstream "self" so its delegated tokens can be exchanged
// again.
func startDelegationSTS(t *testing.T) *testSTS {
	t.Helper()
	// SELF is replaced by the STS's own URL (startSTS knows it before New runs).
	return startSTS(t, stsOptions{
		policy: delegationPolicy,
		aExtra: `    preset: kubernetes
    subjects: ["system:serviceaccount:payments:*", "system:serviceaccount:gateway:*", "system:serviceaccount:billing:*"]
`,
		upstreams: `  - name: self
    kind: oidc
    issuer: SELF
    audiences: [sts-self]
    jwks_uri: SELF/jwks
`,
	})
}

func actorForm(f url.Values, actor string) url.Values {
	f.Set("actor_token", actor)
	f.Set("actor_token_type", TypeJWT)
	return f
}

func TestDelegation(t *testing.T) {
	ts := startDelegationSTS(t)
	gateway := "system:serviceaccount:gateway:edge"

	// A direct actor: the token carries act and the actor as client_id.
	r := ts.post(t, actorForm(ts.form(ts.a.Token(t, payments)), ts.a.Token(t, gateway)))
	if r.status != 200 {
		t.Fatalf("delegated exchange: %d %s", r.status, r.raw)
	}
	c := decodeSegment(t, r.body["access_token"].(string), 1)
	act, _ := json.Marshal(c["act"])
	if string(act) != `{"iss":"https://issuer.example","sub":"`+gateway+`"}` || c["client_id"] != gateway || c["sub"] != payments {
		t.Fatalf("claims %v", c)
	}

	// An actor no rule names is refused.
	r = ts.post(t, actorForm(ts.form(ts.a.Token(t, payments)), ts.a.Token(t, "system:serviceaccount:billing:api")))
	assertRefused(t, r, 400, codeInvalidRequest)

	// may_act in the subject token is honoured: another gateway is refused.
	mayAct := func(m map[string]any) { m["may_act"] = map[string]any{"sub": "system:serviceaccount:gateway:other"} }
	r = ts.post(t, actorForm(ts.form(ts.a.Token(t, payments, mayAct)), ts.a.Token(t, gateway)))
	assertRefused(t, r, 400, codeInvalidRequest)
	r = ts.post(t, actorForm(ts.form(ts.a.Token(t, payments, mayAct)), ts.a.Token(t, "system:serviceaccount:gateway:other")))
	if r.status != 200 {
		t.Fatalf("may_act actor refused: %d %s", r.status, r.raw)
	}

	// A chain: the delegated token (audience sts-self) is exchanged again by a second
	// gateway; act nests, current actor outermost.
	f := actorForm(ts.form(ts.a.Token(t, payments)), ts.a.Token(t, gateway))
	f.Set("audience", "sts-self")
	r = ts.post(t, f)
	if r.status != 200 {
		t.Fatalf("first hop: %d %s", r.status, r.raw)
	}
	hop1 := r.body["access_token"].(string)
	second := "system:serviceaccount:gateway:inner"
	r = ts.post(t, actorForm(ts.form(hop1), ts.a.Token(t, second)))
	if r.status != 200 {
		t.Fatalf("second hop: %d %s", r.status, r.raw)
	}
	c = decodeSegment(t, r.body["access_token"].(string), 1)
	act, _ = json.Marshal(c["act"])
	want := `{"act":{"iss":"https://issuer.example","sub":"` + gateway + `"},"iss":"https://issuer.example","sub":"` + second + `"}`
	if string(act) != want || c["sub"] != payments {
		t.Fatalf("act %s, want %s", act, want)
	}

	// The delegated token without an actor is refused: its chain must grow.
	r = ts.post(t, ts.form(hop1))
	assertRefused(t, r, 400, codeInvalidRequest)

	// Depth 3 exceeds max_delegation_depth 2.
	f = actorForm(ts.form(hop1), ts.a.Token(t, second))
	f.Set("audience", "sts-self")
	hop2 := ts.post(t, f)
	if hop2.status != 200 {
		t.Fatalf("hop 2 to self: %d %s", hop2.status, hop2.raw)
	}
	r = ts.post(t, actorForm(ts.form(hop2.body["access_token"].(string)), ts.a.Token(t, gateway)))
	assertRefused(t, r, 400, codeInvalidRequest)
	if !strings.Contains(ts.audit.String(), "max_delegation_depth") {
		t.Fatal("audit log lacks the depth reason")
	}
}

func TestCopyAttributesAuditModeAndBreadth(t *testing.T) {
	ts := startDelegationSTS(t)
	k8s := func(m map[string]any) {
		m["kubernetes.io"] = map[string]any{
			"namespace":      "payments",
			"serviceaccount": map[string]any{"name": "api", "uid": "sa-uid"},
			"pod":            map[string]any{"name": "api-7d9", "uid": "pod-uid-1"},
		}
	}
	r := ts.post(t, ts.form(ts.a.Token(t, payments, k8s)))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	c := decodeSegment(t, r.body["access_token"].(string), 1)
	got, _ := json.Marshal(c["attributes"])
	if string(got) != `{"namespace":"payments","pod_uid":"pod-uid-1","service_account":"api"}` {
		t.Fatalf("attributes %s", got)
	}
	// The audit-mode deny matched but did not change the outcome; it is reported.
	if !strings.Contains(ts.audit.String(), `"audit_rule":{"rule":"dry-run-deny-payments","would":"deny_rule"}`) {
		t.Fatalf("audit hit missing:\n%s", ts.audit.String())
	}
	if !strings.Contains(ts.metrics(t), `safeconduct_policy_audit_hits_total{rule="dry-run-deny-payments",would="deny_rule"} 1`) {
		t.Fatal("audit hit not counted")
	}
	// Issuer breadth: cluster-a may not assert subjects outside its patterns.
	r = ts.post(t, ts.form(ts.a.Token(t, "system:serviceaccount:kube-system:admin")))
	assertRefused(t, r, 400, codeInvalidRequest)
	if !strings.Contains(ts.audit.String(), "outside the upstream's allowed subjects") {
		t.Fatal("breadth refusal reason missing")
	}
}
