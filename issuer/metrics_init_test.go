package issuer

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// adminAuditPolicy: ops may revoke (not block); nobody else is an admin.
const adminAuditPolicy = testPolicy + `admin:
  - name: ops-revoke
    upstreams: [cluster-a]
    subjects: ["system:serviceaccount:secops:ops"]
    actions: [revoke]
    within_upstreams: ["*"]
`

// TestCountersFromZero: before any request, the counters of known label
// combinations are on /metrics at 0 (so that increase() sees the first event),
// and safeconduct_build_info names the Go version.
func TestCountersFromZero(t *testing.T) {
	ts := startSTS(t, stsOptions{policy: adminAuditPolicy})
	text := ts.metrics(t)
	for _, want := range []string{
		`safeconduct_exchanges_total{error="",outcome="issued"} 0`,
		`safeconduct_exchanges_total{error="invalid_request",outcome="refused"} 0`,
		`safeconduct_exchanges_total{error="temporarily_unavailable",outcome="refused"} 0`,
		`safeconduct_exchanges_total{error="invalid_target",outcome="refused"} 0`,
		`safeconduct_exchange_duration_seconds_count{outcome="issued"} 0`,
		`safeconduct_policy_decisions_total{outcome="allow",rule="payments-to-ledger"} 0`,
		`safeconduct_policy_decisions_total{outcome="deny_rule",rule="block-payments-blocked"} 0`,
		`safeconduct_policy_decisions_total{outcome="deny_no_rule",rule=""} 0`,
		`safeconduct_policy_admin_decisions_total{action="revoke",outcome="allow",rule="ops-revoke"} 0`,
		`safeconduct_policy_admin_decisions_total{action="block",outcome="deny_no_rule",rule=""} 0`,
		`safeconduct_revocation_store_errors_total{op="admit"} 0`,
		`safeconduct_revocation_store_seconds_count{op="create"} 0`,
		`safeconduct_revocations_total{kind="block"} 0`,
		`safeconduct_policy_reloads_total{result="error"} 0`,
		`safeconduct_rate_limited_total{reason="overload"} 0`,
		`safeconduct_build_info{goversion="` + runtime.Version() + `",`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics at start lacks %s", want)
		}
	}
}

// TestAdminRuleUseCounted: a refused block is audited as a block with its
// selector, whether the caller is no admin at all or an admin without the
// block action; a revoke the admin rule grants is counted under the rule.
func TestAdminRuleUseCounted(t *testing.T) {
	ts := startSTS(t, stsOptions{policy: adminAuditPolicy})
	ops := ts.a.Token(t, "system:serviceaccount:secops:ops")
	nobody := ts.a.Token(t, payments)
	// Sent in another order than the canonical one the events record.
	sel, canonical := "upstream=cluster-a,sub="+outsider, "sub="+outsider+",upstream=cluster-a"
	post := func(tok, kind string) *reply {
		return ts.do(t, http.MethodPost, PathAdmin+"revocations", "application/json",
			string(mustJSON(map[string]string{"selector": sel, "kind": kind, "reason": "incident 9"})), bearer(tok))
	}
	for _, c := range []struct{ name, tok string }{{"no admin", nobody}, {"admin without block", ops}} {
		t.Run(c.name, func(t *testing.T) {
			if r := post(c.tok, "block"); r.status != http.StatusForbidden {
				t.Fatalf("block: %d %s", r.status, r.raw)
			}
			ev := lastEvent(t, ts, "block")
			if ev["outcome"] != "denied" || ev["selector"] != canonical || ev["reason"] == "" {
				t.Fatalf("refused block audited as %v", ev)
			}
		})
	}
	if r := post(ops, "revoke"); r.status != http.StatusCreated {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	if ev := lastEvent(t, ts, "revoke"); ev["outcome"] != "recorded" || ev["selector"] != canonical {
		t.Fatalf("revoke audited as %v", ev)
	}
	text := ts.metrics(t)
	for _, want := range []string{
		`safeconduct_policy_admin_decisions_total{action="revoke",outcome="allow",rule="ops-revoke"} 1`,
		`safeconduct_policy_admin_decisions_total{action="block",outcome="deny_no_rule",rule=""} 1`,
		`safeconduct_policy_admin_decisions_total{action="block",outcome="deny_action",rule=""} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(text, "admin_decisions"))
		}
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
